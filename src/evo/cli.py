"""`evo ...`: one table of verbs, each a short function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from evo.config import ConfigError, load_config
from evo.data.ingest import IngestError
from evo.errors import EvoError
from evo.lineage.decisions import DecisionError
from evo.numbers import show

DEFAULT_ROOT = "lineage"


# Worker processes: no progress bars or deprecation chatter from libraries; evo reports progress.
WORKER_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Attach to a cluster when given an address (or RAY_ADDRESS); otherwise start Ray in-process."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": WORKER_ENV}
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k != "PYTHONWARNINGS"})
    # Ray gives a new local GCS 30 s to come up; a busy laptop can need more (unless you set it).
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        # One machine: no node can be preempted apart from this one, so Ray Train's preemption watcher
        # has nothing to watch, and it logs an error-level line about its constructor arguments in
        # every run (ray-project/ray#53727). Off here, unless you set it; on a cluster it stays on.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(address="local", num_cpus=num_cpus, runtime_env=runtime_env)


def _location(raw: str) -> str:
    """--root as every process should open it: a URI as given, a folder made absolute."""
    from evo.storage import is_uri

    return raw.rstrip("/") if is_uri(raw) else str(Path(raw).resolve())


def _open_root(raw: str) -> Path:
    """The local folder for --root: the folder, or this machine's mirror of a URI, its state fetched."""
    from evo.storage import is_uri

    if not is_uri(raw):
        return Path(raw).resolve()
    from evo.lineage.root import Lineage

    return Lineage(raw).root


def print_ledger(root: Path, as_json: bool) -> None:
    from evo.lineage.ledger import Ledger

    rows = Ledger(root).rows()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"{root}/ledger.csv: no generations yet")
        return
    cols = ["GEN_ID", "child_sha", "steps", "walltime_min", "loss_start", "loss_end", "eval_recall",
            "eval_generalization", "eval_style_drift", "replay_k", "patterns_healed", "decision", "split"]
    table = [cols] + [[(r[c][:12] if c.endswith("sha") else r[c] or ("v1" if c == "split" else "")) for c in cols]
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print("split: v1 = one holdout, used both to choose checkpoints and to report; v2 = train / val (choosing "
          "only) / test (reported and gated)")
    print("\nreasons: " + "; ".join(f"{r['GEN_ID']}: {r['reason']}" for r in rows))
    ab = [f"{r['GEN_ID']}: {r['ab_result']}" for r in rows if r["ab_result"]]
    if ab:
        print("A/B: " + "; ".join(ab))


def _run_config(cfg, root: str, address: str | None, tune: bool = False, max_generations=None) -> int:
    from evo.inputs import check_inputs

    check_inputs(cfg, root)  # a bad line fails here, before Ray (or torch) is even imported
    from evo.driver import run
    from evo.progress import Progress

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


def overrides(args) -> list[str]:
    return (args.set or []) + (["data.skip_invalid=true"] if getattr(args, "skip_invalid", False) else [])


def cmd_demo(args) -> int:
    from evo.data.demo import write_demo_data
    from evo.data.shop import write_shop_data

    root = _open_root(args.root)
    write = {"tiny": write_demo_data, "smollm2": write_shop_data}[args.base]
    # the real model's demo: two LoRA generations fit 2 CPU cores in minutes
    generations = args.generations or (2 if args.base == "smollm2" else 3)
    cfg_path = write(root / "demo_data", generations=generations, drift=2 if args.drift else 0)
    print(f"demo data and config written to {cfg_path.parent}")
    cfg = load_config(cfg_path, overrides(args))
    _run_config(cfg, _location(args.root), None)
    if args.ab_budget > 0:
        from evo.ab_round import NothingToTest

        print("\nA/B round on the last generation: its parent and it, side by side on Ray Serve")
        try:
            _ab(cfg, _location(args.root), args.ab_budget, args.port)
        except NothingToTest as e:
            print(f"no A/B round: {e}")
    from evo.report import build_report

    print(f"\nreport: {build_report(root, lambda msg: None)} (evo report --root {args.root} writes it again)")
    return 0


def _ab(cfg, root: str, budget: int, port: int) -> None:
    from evo.ab_round import run_ab_round
    from evo.progress import Progress

    out = run_ab_round(cfg, root, budget=budget, port=port, progress=Progress())
    print(f"A/B {out.gen_id}: {out.verdict} after {out.votes} distinct prompts in {out.seconds:.0f}s -> {out.action}")
    print(f"  ledger row {out.gen_id}: ab_result = {ledger_ab_result(root, out.gen_id)}")


def ledger_ab_result(root: Path, gen_id: str) -> str:
    from evo.lineage.ledger import Ledger

    return Ledger(root).get(gen_id)["ab_result"]


def cmd_ab(args) -> int:
    cfg = _saved_config(_open_root(args.root))
    start_ray(args.address)
    _ab(cfg, _location(args.root), args.budget, args.port)  # a URI: the replicas follow it themselves
    return 0


def _saved_config(root: Path, sets: list[str] = ()):
    """The resolved config of the latest run under `root`, with `a.b=value` overrides."""
    from evo.atomic import read_json
    from evo.config import apply_overrides, from_dict

    path = root / "run_config.json"
    if not path.exists():
        raise ConfigError(f"{path}: no run config here; run `evo run` or `evo demo` with this --root first")
    return from_dict(apply_overrides(read_json(path), list(sets)), str(path))


def _weak_analysis(args, root: Path):
    """Shared by `evo weak` and `evo targeted`: score a generation on a set and find its weak areas."""
    from evo.curation.weak import analyse
    from evo.lineage.root import Lineage

    cfg, lin = _saved_config(root, args.set or []), Lineage(root)
    if args.threshold is not None:
        cfg.healing.weak_threshold = args.threshold
    return cfg, lin, analyse(lin, cfg, args.gen, args.data)


def _print_weak(w) -> None:
    r = w.report
    print(f"{w.gen_id} ({w.sha[:12]}) on {r.examples} examples from {w.source}")
    print("examples above each perplexity threshold: " + ", ".join(f">{t:g}: {n}" for t, n in r.above_threshold))
    print(f"weak areas (at least {r.weak_share:.0%} of their examples above perplexity {r.threshold:g}, "
          f"grouped by {r.area_grouping}):")
    for a in r.weak_areas[:15]:
        print(f"  {a.area}: {a.above}/{a.examples} above, mean perplexity {a.mean_perplexity:.2f}")
    if not r.weak_areas:
        print("  none")


def cmd_weak(args) -> int:
    from evo.atomic import atomic_write_json

    root = _open_root(args.root)
    _, _, w = _weak_analysis(args, root)
    out = root / "weak" / f"{w.gen_id}.json"
    atomic_write_json(out, w.report.to_json())
    _print_weak(w)
    print(f"full report: {out}")
    return 0


def cmd_targeted(args) -> int:
    from evo.atomic import atomic_write_json
    from evo.curation.targeted import targeted_for, write_jsonl

    root = _open_root(args.root)
    cfg, lin, w = _weak_analysis(args, root)
    _print_weak(w)
    print(f"making targeted variations of the {cfg.targeted.seeds} weakest examples "
          f"(model: {cfg.targeted.model_variations} each, generator {cfg.targeted.generator or '(none)'}: "
          f"{cfg.targeted.generator_variations} each)", flush=True)
    res = targeted_for(lin, cfg, w, seed=args.seed)
    out = Path(args.out) if args.out else root / "targeted" / f"{w.gen_id}.jsonl"
    write_jsonl(out, res.records)
    r = res.report
    r.gen_id, r.sha, r.source, r.written = w.gen_id, w.sha, w.source, str(out)
    atomic_write_json(out.with_suffix(".json"), r.to_json())

    def counts(d: dict) -> str:
        return ", ".join(f"{k}: {v}" for k, v in d.items())

    print(f"{r.candidates} candidates ({counts(r.candidates_by_source)}); dropped: {counts(r.dropped) or 'none'}")
    print(f"kept {r.kept} ({counts(r.kept_by_source)}) over {len(r.kept_by_area)} area(s); mean quality "
          f"{show(r.mean_quality)}, difficulty {show(r.mean_difficulty)}, diversity {show(r.mean_diversity)}")
    print(f"wrote {out} (report: {out.with_suffix('.json')})\n"
          f"train on it as the next delta: add it to data.generations in your config, then `evo run`")
    return 0


def cmd_experiment(args) -> int:
    from evo.curation.weak import model_of
    from evo.data.ingest import ingest_jsonl
    from evo.experiment import NAME, run_experiment, show_interval
    from evo.lineage.root import Lineage

    lin = Lineage(_location(args.root))  # a URI: the Train workers and eval tasks open it themselves
    root = lin.root
    cfg = _saved_config(root, args.set or [])
    start = model_of(lin, args.gen)
    for f in (args.data, args.probe):
        if f:
            ingest_jsonl(f)  # a bad file fails here, before Ray starts
    pool = ingest_jsonl(args.pool).records if args.pool else []
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: give at least 1 (3 or more for an interval worth reading)")
    from evo.curation.targeted import TargetedError, load_generator

    if load_generator(cfg.targeted.generator, cfg.targeted.generator_options) is None and not (args.data and args.probe):
        raise TargetedError("give an evaluation set and a probe set (--data FILE --probe FILE) or a domain generator "
                            "(targeted.generator)")
    start_ray(args.address)
    print(f"targeted vs random from {start[:12]}: {args.seeds} seed(s) of {args.rounds} round(s)", flush=True)
    exp = run_experiment(cfg, lin, start, args.rounds, args.seeds, args.steps, args.seed,
                         lambda msg: print(f"experiment {msg}", flush=True), eval_file=args.data, probe_file=args.probe,
                         pool=pool, eval_size=args.eval_size, probe_size=args.probe_size, fresh=args.fresh,
                         min_records=args.min_records)
    for rep in exp.replications:
        if rep.note:
            print(f"seed {rep.seed}: {rep.note}")
    for r in exp.summary:
        print(f"round {r.round} ({r.seeds} seed(s), {r.records:.0f} records per line): targeted minus random, accuracy "
              f"on the fixed weak areas {show_interval(r.lead['areas']['accuracy'])}; overall "
              f"{show_interval(r.lead['overall']['accuracy'])}")
    print(f"wrote {root / 'experiments' / (NAME + '.json')}; `evo report --root {args.root}` shows it")
    return 0


def cmd_report(args) -> int:
    from evo.report import build_report

    root = _open_root(args.root)
    if not (root / "ledger.csv").exists():
        raise ConfigError(f"{root / 'ledger.csv'}: no lineage here; run `evo run` or `evo demo` with this --root first")
    out = build_report(root, lambda msg: print(f"report {msg}", flush=True))
    print(f"wrote {out}")
    return 0


def cmd_run(args) -> int:
    cfg = load_config(args.config, overrides(args))
    return _run_config(cfg, _location(args.root), args.address, tune=args.tune)


def cmd_correct(args) -> int:
    from evo.healing.corrections import CorrectionError, CorrectionStore, parse_correction, read_corrections_file

    if args.file:
        if any([args.prompt, args.wrong, args.corrected, args.pattern]):
            raise ConfigError("give either --file or --prompt/--wrong/--corrected/--pattern, not both")
        items = read_corrections_file(args.file)
    else:
        try:
            items = [parse_correction({"prompt": args.prompt or "", "wrong": args.wrong or "",
                                       "corrected": args.corrected or "", "pattern": args.pattern or "",
                                       "reason": args.reason or ""})]
        except CorrectionError as e:
            raise IngestError(f"correction: {e}") from None
    store = CorrectionStore(_open_root(args.root))
    added = store.add(items)
    print(f"{store.path}: {len(added)} correction(s) recorded, {len(items) - len(added)} already there; "
          f"{len(store.all())} in all, over {len(store.patterns())} pattern(s). They join the next generation's data.")
    return 0


def cmd_sweep(args) -> int:
    cfg = load_config(args.config, overrides(args))
    code = _run_config(cfg, _location(args.root), args.address, tune=True, max_generations=1)
    print(f"  trials:   {_location(args.root)}/trials")
    return code


def cmd_ledger(args) -> int:
    print_ledger(_open_root(args.root), args.json)
    return 0


def cmd_keys(args) -> int:
    from evo.http.keys import KeyStore

    store = KeyStore(_open_root(args.root))
    if args.action == "create":
        key, row = store.create(args.scope, args.name or "")
        print(f"created {row['id']} ({row['name']}, scope {row['scope']}); the key, shown this once:\n{key}")
    elif args.action == "revoke":
        if not args.which:
            raise SystemExit("evo keys revoke: give the key's id or name (evo keys list)")
        row = store.revoke(args.which)
        print(f"revoked {row['id']} ({row['name']}): its requests get 401 from now on")
    else:
        for r in store.rows():
            state = "revoked" if r["revoked_at"] else "live"
            print(f"{r['id']}  {r['name']:<20} {r['scope']:<10} {state}")
    return 0


def cmd_run_job(args) -> int:
    from evo.driver import run_generation
    from evo.finetune.run_job import execute

    start_ray(args.address)
    return execute(_location(args.root), args.job, run_generation)


def cmd_check(args) -> int:
    cfg = load_config(args.config, args.set or [])
    print(f"{args.config}: valid ({len(cfg.data.generations)} generations)")
    return 0


def cmd_serve(args) -> int:
    import time

    from ray import serve

    from evo.http.app import SERVE_LOGGING, build_app

    root = _location(args.root)  # a URI: each replica follows it through its own mirror
    start_ray(args.address)
    serve.start(http_options={"host": args.host, "port": args.port}, logging_config=SERVE_LOGGING)
    resources = {"num_gpus": args.num_gpus, "num_cpus": 1} if args.num_gpus else None
    serve.run(build_app(str(root), args.candidate_share, num_replicas=args.replicas, ray_actor_options=resources,
                        max_upload_bytes=int(args.max_upload_mb * (1 << 20)), host=args.host,
                        rate_per_minute=args.rate_limit), name="evo", route_prefix="/")
    print(f"serving {root} at http://{args.host}:{args.port}/v1 (models: evo, champion, candidate, gen-N); "
          "Ctrl-C to stop", flush=True)
    while True:
        time.sleep(3600)


def cmd_decide(args) -> int:
    """promote / reject / revert: one decision through evo.lineage.decisions, printed as recorded."""
    from evo.lineage.decisions import Decisions

    decisions = Decisions(_open_root(args.root))
    why = f"by hand: {args.reason}" if args.reason else "by hand (evo CLI)"
    if args.verb == "revert":
        d = decisions.revert(args.to, why)
    else:
        d = getattr(decisions, args.verb)(args.gen, why)
    print(f"{d.op} {d.gen_id}: recorded in {d.path}")
    print(f"  champion:  {decisions.registry.alias('champion')}")
    print(f"  candidate: {decisions.registry.alias('candidate') or '-'}")
    return 0


def cmd_export(args) -> int:
    from evo.lineage.export import export_generation

    root = _open_root(args.root)
    out = args.out or str(root / "exports" / (args.gen + ("" if args.format == "merged" else f".{args.outtype}.gguf")))
    print(f"exporting {args.gen} as {args.format}{'' if args.format == 'merged' else ' ' + args.outtype} to {out}", flush=True)
    path = export_generation(root, args.gen, out, args.format, args.outtype)
    if args.format == "merged":
        print(f"wrote {path}: AutoModelForCausalLM.from_pretrained({str(path)!r}) loads it")
    else:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): llama.cpp reads it; so does "
              f"AutoModelForCausalLM.from_pretrained({str(path.parent)!r}, gguf_file={path.name!r})")
    return 0


def cmd_compare_bases(args) -> int:
    from evo.compare import compare_bases, reasons, table
    from evo.driver import run

    start_ray(args.address)
    results = compare_bases(args.config, args.base, _open_root(args.root), overrides(args), args.generations, args.prompts,
                            run=run)
    print()
    print(table(results))
    print(reasons(results))
    print(f"\nwritten to {_open_root(args.root) / 'compare-bases.md'} (and .json); each base's lineage under "
          f"{_open_root(args.root)}/<base>/")
    return 0


VERBS = {
    "demo": (cmd_demo, "generate the demo data, build generation 0 and run 3 generations locally"),
    "run": (cmd_run, "run every generation of CONFIG not yet in the ledger (resumes)"),
    "sweep": (cmd_sweep, "search the next generation with Ray Tune (lr, steps, replay k); the gate's evals pick the child"),
    "ledger": (cmd_ledger, "print the lineage ledger"),
    "report": (cmd_report, "write ROOT/report.html: evals, loss curves, the lineage tree, healing, sweeps"),
    "weak": (cmd_weak, "rank examples by the model's perplexity and report the weak areas"),
    "targeted": (cmd_targeted, "write targeted variations of the weak areas' examples as the next delta"),
    "experiment": (cmd_experiment, "train on targeted and on random data of the same size, round after round, and compare"),
    "correct": (cmd_correct, "record corrections (prompt, wrong, corrected, pattern, reason) for the next generation"),
    "check": (cmd_check, "validate CONFIG and list every problem"),
    "ab": (cmd_ab, "run an A/B round on the latest promoted generation, then promote or revert it"),
    "promote": (cmd_decide, "make a generation (default: the candidate) the champion"),
    "reject": (cmd_decide, "set a generation (default: the candidate) aside; the champion stays"),
    "revert": (cmd_decide, "make an earlier generation on the champion's line the champion again"),
    "serve": (cmd_serve, "serve champion and candidate side by side over OpenAI-compatible HTTP (Ray Serve)"),
    "run-job": (cmd_run_job, "run one fine-tuning job of `evo serve`'s API (what its Ray job runs)"),
    "keys": (cmd_keys, "API keys of `evo serve`: create (printed once), list, revoke"),
    "export": (cmd_export, "write a generation as a merged Hugging Face folder or a llama.cpp GGUF file"),
    "compare-bases": (cmd_compare_bases, "run CONFIG's generations on each --base and compare quality, training "
                                         "time and answer latency"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evo", description="Improve a language model in small, audited generations, on Ray.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (fn, help_) in VERBS.items():
        s = sub.add_parser(name, help=help_, description=help_)
        s.set_defaults(fn=fn)
        s.add_argument("--root", default=DEFAULT_ROOT, help=f"lineage root: a folder (default: ./{DEFAULT_ROOT}) or a "
                                                           "URI every node reaches (s3://, gs://, file://)")
        if name in ("run", "check", "sweep", "compare-bases"):
            s.add_argument("config", help="YAML run config")
        if name in ("run", "check", "demo", "sweep", "compare-bases"):
            s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. train.steps=100")
        if name in ("run", "demo", "sweep"):
            s.add_argument("--skip-invalid", action="store_true",
                           help="ingest the valid lines of a file with bad ones (reported), instead of none")
        if name in ("run", "sweep"):
            s.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
        if name == "run-job":
            s.add_argument("job", help="the job's id (ftjob-...)")
            s.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
        if name == "keys":
            s.add_argument("action", choices=["create", "list", "revoke"])
            s.add_argument("which", nargs="?", help="revoke: the key's id or name")
            s.add_argument("--scope", choices=["inference", "fine-tune", "admin"], default="inference",
                           help="create: inference (ask the models), fine-tune (also files and jobs), admin (also "
                                "promote, revert, split; sees every tenant)")
            s.add_argument("--name", help="create: a name to list and revoke it by")
        if name == "run":
            s.add_argument("--tune", action="store_true", help="search each generation with Ray Tune (config: tune)")
        if name == "demo":
            s.add_argument("--generations", type=int,
                           help="demo generations after the base, 1-3 (default: 3; --base smollm2: 2)")
            s.add_argument("--base", choices=["tiny", "smollm2"], default="tiny",
                           help="tiny: a 0.5M-parameter Llama pretrained here on a made-up language (minutes); "
                                "smollm2: SmolLM2-135M-Instruct from its package's GGUF, on an invented "
                                "tool catalogue in English (about 18 minutes on 2 CPU cores)")
            s.add_argument("--drift", action="store_true",
                           help="then two drifting generations (the banned style, nothing new to learn): the stop "
                                "rule stops the run and the last good generation is champion again")
        if name == "compare-bases":
            s.add_argument("--base", action="append", required=True,
                           help="a base: tiny (built from data.base), smollm2, or any model.path (give two or more)")
            s.add_argument("--generations", type=int, help="generations after the base (default: all of CONFIG's)")
            s.add_argument("--prompts", type=int, default=16, help="test prompts timed per champion (default: 16)")
            s.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
        if name == "demo":
            s.add_argument("--ab-budget", type=int, default=100, help="pairs in the closing A/B round (0: none)")
            s.add_argument("--port", type=int, default=8000, help="port of the A/B round's server on 127.0.0.1")
        if name == "ab":
            s.add_argument("--budget", type=int, default=300, help="most distinct prompts asked side by side")
            s.add_argument("--port", type=int, default=8000, help="port of the round's server on 127.0.0.1")
            s.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
        if name == "serve":
            s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
            s.add_argument("--port", type=int, default=8000)
            s.add_argument("--candidate-share", type=float, default=0.5, help="share of 'evo' traffic to the candidate")
            s.add_argument("--replicas", type=int, default=1, help="server replicas; each holds both arms (default: 1)")
            s.add_argument("--rate-limit", type=float, default=0,
                           help="requests a minute per API key, per replica (default: 0, no limit); over it: 429")
            s.add_argument("--max-upload-mb", type=float, default=16,
                           help="largest training file POST /v1/files takes, in MiB (default: 16); larger gets 413")
            s.add_argument("--num-gpus", type=float, default=0,
                           help="GPUs per replica (0: CPU, half a core each); 1 on a GPU cluster")
            s.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
        if name in ("promote", "reject"):
            s.add_argument("gen", nargs="?", help="generation, e.g. gen-2 (default: the candidate)")
        if name == "revert":
            s.add_argument("--to", required=True, help="the generation to restore, e.g. gen-1")
        if name == "export":
            s.add_argument("gen", help="generation id (gen-2), sha or 8+ character prefix, champion or candidate")
            s.add_argument("--format", choices=["merged", "gguf"], default="merged",
                           help="merged: safetensors + tokenizer + meta.json; gguf: one llama.cpp file")
            s.add_argument("--outtype", choices=["f16", "q8_0"], default="f16", help="GGUF weights (default: f16)")
            s.add_argument("--out", help="folder (merged) or .gguf file (default: ROOT/exports/GEN...)")
        if name in ("promote", "reject", "revert"):
            s.add_argument("--reason", help="why, for the ledger and the decision log")
        if name == "ledger":
            s.add_argument("--json", action="store_true", help="print rows as JSON")
        if name in ("weak", "targeted"):
            s.add_argument("--set", action="append", metavar="KEY=VALUE",
                           help="override a field of the root's saved run config, e.g. targeted.seeds=20")
            s.add_argument("--gen", help="generation to score (default: the champion)")
            s.add_argument("--data", help="JSONL to score (default: every generation's val part)")
            s.add_argument("--threshold", type=float, help="perplexity above which an example is weak "
                                                           "(default: healing.weak_threshold)")
        if name == "experiment":
            s.add_argument("--set", action="append", metavar="KEY=VALUE",
                           help="override a field of the root's saved run config, e.g. train.steps=100")
            s.add_argument("--gen", help="start model (default: the champion)")
            s.add_argument("--rounds", type=int, default=2, help="rounds; each trains one child per line")
            s.add_argument("--seeds", type=int, default=3,
                           help="independent replications, for a mean lead with a 95%% interval (default: 3)")
            s.add_argument("--eval-size", type=int, default=40,
                           help="evaluation examples drawn from the generator per seed (default: 40; no training "
                                "record may be within one word of one, so a larger set leaves less to train on)")
            s.add_argument("--probe-size", type=int, default=120,
                           help="probe examples (where weak areas are found) drawn per seed (default: 120)")
            s.add_argument("--data", help="JSONL evaluation set (default: drawn from targeted.generator)")
            s.add_argument("--probe", help="JSONL probe set, disjoint from the evaluation set (default: drawn)")
            s.add_argument("--pool", help="JSONL to draw the random arm from (default: targeted.generator)")
            s.add_argument("--steps", type=int, help="training steps per child (default: train.steps)")
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--fresh", action="store_true", help="replace an earlier experiment instead of continuing it")
            s.add_argument("--min-records", type=int, default=16,
                           help="stop when the filter keeps fewer targeted records than this (default: 16)")
            s.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
        if name == "targeted":
            s.add_argument("--out", help="JSONL to write (default: ROOT/targeted/<gen>.jsonl)")
            s.add_argument("--seed", type=int, default=0, help="sampling seed")
        if name == "correct":
            s.add_argument("--file", help="JSONL of corrections, one per line (all or none are recorded)")
            s.add_argument("--prompt", help="the prompt that got a wrong answer")
            s.add_argument("--wrong", help="the wrong output")
            s.add_argument("--corrected", help="what the output should have been")
            s.add_argument("--pattern", help="an id for the kind of error (e.g. date-format)")
            s.add_argument("--reason", help="why it was wrong")
    return p


def choose_auth_mode() -> None:
    """Token auth on purpose (Ray's default since 2.59): even a local cluster listens on the network.

    Must run before Ray is imported, which reads the mode once. Set RAY_AUTH_MODE to choose otherwise.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")


def main(argv: list[str] | None = None) -> int:
    choose_auth_mode()
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"evo: config error: {e}", file=sys.stderr)
        return 2
    except IngestError as e:
        print(f"evo: data error: {e}", file=sys.stderr)
        return 2
    except DecisionError as e:
        print(f"evo: decision refused: {e}", file=sys.stderr)
        return 2
    except EvoError as e:
        if args.verb == "keys":
            print(f"evo: {e}", file=sys.stderr)
            return 2
        print(f"evo: {e}\nevo: nothing was recorded for the failed generation; fix the cause and "
              "run the same command again to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nevo: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
