"""The bodies of the verbs whose home rooms are being reshaped now: demo, run, sweep, experiment, serve,
run-job, keys and compare-bases (their homes: the driver, the experiment, http/, finetune/).

Each verb imports only what it needs, when it runs: the heavy rooms (the driver, the A/B round, the
HTTP app, the experiment, the report) bring torch, transformers, Ray Serve and matplotlib, about 13 s
together on 2 cores, while `evo keys` needs none of them and `evo run` checks its inputs first.
"""

from __future__ import annotations

import time

from evo.config import ConfigError, load_config, saved_config
from evo.data.demo import write_demo_data
from evo.data.ingest import ingest_jsonl
from evo.data.shop import write_shop_data
from evo.http.keys import KeyStore
from evo.lineage.ledger import print_ledger
from evo.progress import Progress
from evo.ray_start import start_ray
from evo.storage import location, open_root


def _overrides(sets: list[str] | None, skip_invalid: bool = False) -> list[str]:
    return (sets or []) + (["data.skip_invalid=true"] if skip_invalid else [])


def run_config(cfg, root: str, address: str | None, tune: bool = False, max_generations=None) -> int:
    """Every generation of `cfg` not yet in the ledger at `root` (a location), then the ledger and where it all is."""
    from evo.inputs import check_inputs  # lazy: model and lineage code, only for the verbs that run a config

    check_inputs(cfg, root)  # a bad line fails here, before Ray (or torch) is even imported
    from evo.driver import run  # lazy: torch and Ray, after the inputs are checked

    start_ray(address)
    summary = run(cfg, root, Progress(), tune=tune, max_generations=max_generations)
    print()
    print_ledger(summary.root, as_json=False)
    mirror = f" (this machine's mirror: {summary.root})" if str(summary.root) != root else ""
    print(f"\nlineage root: {root}{mirror}\n  ledger:   {summary.root / 'ledger.csv'}\n"
          f"  registry: {summary.root / 'registry.json'}\n  models:   {summary.root / 'models'}\n"
          f"  evals:    {summary.root / 'evals'}")
    if summary.stopped:
        print(f"\n{summary.message}")
    return 0


def cmd_demo(root: str, sets: list[str] | None, skip_invalid: bool, generations: int | None, base: str, drift: bool,
             ab_budget: int, port: int) -> int:
    local = open_root(root)
    write = {"tiny": write_demo_data, "smollm2": write_shop_data}[base]
    # the real model's demo: two LoRA generations fit 2 CPU cores in minutes
    generations = generations or (2 if base == "smollm2" else 3)
    cfg_path = write(local / "demo_data", generations=generations, drift=2 if drift else 0)
    print(f"demo data and config written to {cfg_path.parent}")
    cfg = load_config(cfg_path, _overrides(sets, skip_invalid))
    run_config(cfg, location(root), None)
    if ab_budget > 0:
        from evo.ab_round import NothingToTest, ab_and_print  # lazy: Ray Serve and the HTTP app, once Ray is up

        print("\nA/B round on the last generation: its parent and it, side by side on Ray Serve")
        try:
            ab_and_print(cfg, location(root), ab_budget, port)
        except NothingToTest as e:
            print(f"no A/B round: {e}")
    from evo.report import build_report  # lazy: matplotlib, at the end

    print(f"\nreport: {build_report(local, lambda msg: None)} (evo report --root {root} writes it again)")
    return 0


def cmd_run(root: str, config: str, sets: list[str] | None, skip_invalid: bool, address: str | None, tune: bool) -> int:
    cfg = load_config(config, _overrides(sets, skip_invalid))
    return run_config(cfg, location(root), address, tune=tune)


def cmd_sweep(root: str, config: str, sets: list[str] | None, skip_invalid: bool, address: str | None) -> int:
    cfg = load_config(config, _overrides(sets, skip_invalid))
    code = run_config(cfg, location(root), address, tune=True, max_generations=1)
    print(f"  trials:   {location(root)}/trials")
    return code


def cmd_experiment(root: str, sets: list[str] | None, gen: str | None, rounds: int, seeds: int, eval_size: int,
                   probe_size: int, data: str | None, probe: str | None, pool: str | None, steps: int | None, seed: int,
                   fresh: bool, min_records: int, address: str | None) -> int:
    from evo.curation.targeted import TargetedError, load_generator  # lazy: torch (the model's scoring)
    from evo.curation.weak import model_of  # lazy: torch (the model's scoring)
    from evo.experiment import NAME, run_experiment, show_interval  # lazy: torch and Ray (training)
    from evo.lineage.root import Lineage  # lazy: torch (model artifacts)

    lin = Lineage(location(root))  # a URI: the Train workers and eval tasks open it themselves
    local = lin.root
    cfg = saved_config(local, sets or [])
    start = model_of(lin, gen)
    for f in (data, probe):
        if f:
            ingest_jsonl(f)  # a bad file fails here, before Ray starts
    pool_records = ingest_jsonl(pool).records if pool else []
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1 (3 or more for an interval worth reading)")
    if load_generator(cfg.targeted.generator, cfg.targeted.generator_options) is None and not (data and probe):
        raise TargetedError("give an evaluation set and a probe set (--data FILE --probe FILE) or a domain generator "
                            "(targeted.generator)")
    start_ray(address)
    print(f"targeted vs random from {start[:12]}: {seeds} seed(s) of {rounds} round(s)", flush=True)
    exp = run_experiment(cfg, lin, start, rounds, seeds, steps, seed,
                         lambda msg: print(f"experiment {msg}", flush=True), eval_file=data, probe_file=probe,
                         pool=pool_records, eval_size=eval_size, probe_size=probe_size, fresh=fresh,
                         min_records=min_records)
    for rep in exp.replications:
        if rep.note:
            print(f"seed {rep.seed}: {rep.note}")
    for r in exp.summary:
        print(f"round {r.round} ({r.seeds} seed(s), {r.records:.0f} records per line): targeted minus random, accuracy "
              f"on the fixed weak areas {show_interval(r.lead['areas']['accuracy'])}; overall "
              f"{show_interval(r.lead['overall']['accuracy'])}")
    print(f"wrote {local / 'experiments' / (NAME + '.json')}; `evo report --root {root}` shows it")
    return 0


def cmd_serve(root: str, host: str, port: int, candidate_share: float, replicas: int, rate_limit: float,
              max_upload_mb: float, num_gpus: float, address: str | None) -> int:
    from ray import serve

    from evo.http.app import SERVE_LOGGING, build_app  # lazy: Ray Serve, FastAPI and the models' code

    where = location(root)  # a URI: each replica follows it through its own mirror
    start_ray(address)
    serve.start(http_options={"host": host, "port": port}, logging_config=SERVE_LOGGING)
    resources = {"num_gpus": num_gpus, "num_cpus": 1} if num_gpus else None
    serve.run(build_app(str(where), candidate_share, num_replicas=replicas, ray_actor_options=resources,
                        max_upload_bytes=int(max_upload_mb * (1 << 20)), host=host,
                        rate_per_minute=rate_limit), name="evo", route_prefix="/")
    print(f"serving {where} at http://{host}:{port}/v1 (models: evo, champion, candidate, gen-N); "
          "Ctrl-C to stop", flush=True)
    while True:
        time.sleep(3600)


def cmd_run_job(root: str, job: str, address: str | None) -> int:
    from evo.driver import run_generation  # lazy: torch and Ray
    from evo.finetune.run_job import execute  # lazy: torch and Ray

    start_ray(address)
    return execute(location(root), job, run_generation)


def cmd_keys(root: str, action: str, which: str | None, scope: str, name: str | None) -> int:
    store = KeyStore(open_root(root))
    if action == "create":
        key, row = store.create(scope, name or "")
        print(f"created {row['id']} ({row['name']}, scope {row['scope']}); the key, shown this once:\n{key}")
    elif action == "revoke":
        if not which:
            raise SystemExit("evo keys revoke: give the key's id or name (evo keys list)")
        row = store.revoke(which)
        print(f"revoked {row['id']} ({row['name']}): its requests get 401 from now on")
    else:
        for r in store.rows():
            state = "revoked" if r["revoked_at"] else "live"
            print(f"{r['id']}  {r['name']:<20} {r['scope']:<10} {state}")
    return 0


def cmd_compare_bases(root: str, config: str, sets: list[str] | None, base: list[str], generations: int | None,
                      prompts: int, address: str | None) -> int:
    from evo.compare import compare_bases, reasons, table  # lazy: torch (the champions' answers)
    from evo.driver import run  # lazy: torch and Ray

    start_ray(address)
    local = open_root(root)
    results = compare_bases(config, base, local, _overrides(sets), generations, prompts, run=run)
    print()
    print(table(results))
    print(reasons(results))
    print(f"\nwritten to {local / 'compare-bases.md'} (and .json); each base's lineage under {local}/<base>/")
    return 0
