"""Real Ray Train runs of the generation loop: DDP, DeepSpeed ZeRO-2, retries and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evo.data.store import delta_parts
from evo.driver import run, run_generation
from evo.lineage.ledger import COLUMNS
from evo.lineage.root import Lineage
from evo.model.artifacts import ModelStore
from evo.nearcopy import NearIndex
from evo.progress import Silent
from tests.helpers import LOOSE_GATE, TINY, copy_root, tiny_config
from tests.helpers.faults import FAIL_ONCE

pytestmark = pytest.mark.integration


# Tests of what does not depend on data parallelism train on one Ray Train worker (a worker process
# less per run); DDP is covered by the two-generation run, DeepSpeed by its own tests.
ONE_WORKER = ["train.num_workers=1"]


def assert_lineage_consistent(root: Path) -> None:
    lin = Lineage(root)
    rows = lin.ledger.rows()
    ids = [r["GEN_ID"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate ledger rows: {ids}"
    reg = lin.registry.load()
    assert reg["aliases"]["candidate"] is None  # nothing left undecided
    champion = reg["aliases"]["champion"]
    lin.models.verify(champion)
    for r in rows:
        assert reg["models"][r["child_sha"]]["gen_id"] == r["GEN_ID"]
        assert lin.data.path(r["data_delta_sha"]).exists()
        assert lin.eval_path(r["GEN_ID"]).exists()
    promoted = [r["child_sha"] for r in rows if r["decision"] == "promoted"]
    assert champion == promoted[-1]


def test_generation_zero_is_a_verified_base(base_root):
    lin = Lineage(base_root)
    (row,) = lin.ledger.rows()
    assert row["GEN_ID"] == "gen-0" and row["decision"] == "promoted" and row["parent_sha"] == ""
    meta = lin.models.verify(row["child_sha"])
    assert meta["kind"] == "base"
    folder = lin.models.path(row["child_sha"])
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))  # nothing pickled
    assert not (folder / "optimizer.safetensors").exists()  # the model, not the checkpoint's training state
    assert float(row["loss_end"]) < float(row["loss_start"])


def test_two_generations_ddp(two_generations_root, demo_dir, tmp_path):
    """Generations 1 and 2 on Ray Train (run once for the session by the fixture, copied here)."""
    root = copy_root(two_generations_root, tmp_path)
    cfg = tiny_config(demo_dir, *LOOSE_GATE)
    rows = Lineage(root).ledger.rows()
    assert [r["GEN_ID"] for r in rows] == ["gen-0", "gen-1", "gen-2"]
    assert list(rows[0])[: len(COLUMNS)] == COLUMNS
    g1, g2 = rows[1], rows[2]
    assert g1["decision"] == g2["decision"] == "promoted"
    assert g2["parent_sha"] == g1["child_sha"] and g1["parent_sha"] == rows[0]["child_sha"]
    assert int(g1["steps"]) == 20 and int(g1["replay_k"]) == 20
    assert g2["eval_style_drift"] != "" and g2["split"] == "v3"
    store = ModelStore(root)
    assert store.chain(g2["child_sha"]) == [rows[0]["child_sha"], g1["child_sha"], g2["child_sha"]]
    adapter = store.path(g2["child_sha"])
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "meta.json"]
    meta = store.meta(g2["child_sha"])
    assert meta["best"]["step"] in (10, 20) and meta["data_delta_sha"] == g2["data_delta_sha"]
    assert meta["poll_interval_s"] == cfg.train.poll_interval_s  # the setting reached the workers (Ray's own: 2 s)
    report = json.loads((root / "evals" / "gen-2.json").read_text())
    by_gen = report["child"]["recall_by_gen"]
    assert set(by_gen) == {"gen-0", "gen-1"}
    lin = Lineage(root)
    for gid in ("gen-0", "gen-1"):  # recall is asked on each ancestor's test part (capped), nothing else
        delta = lin.data.get(lin.ledger.get(gid)["data_delta_sha"])
        test = delta_parts(delta, cfg.data.val_fraction, cfg.data.test_fraction).test
        assert by_gen[gid]["total"] == min(len(test), cfg.eval.max_items)
    recall = sum(a["correct"] for a in by_gen.values()) / sum(a["total"] for a in by_gen.values())
    assert float(g2["eval_recall"]) == pytest.approx(recall, abs=1e-5)
    n = sum(a["total"] for a in by_gen.values())  # under eval.recall_halfwidth's 385: the line asked whole
    assert g2["recall_items"] == f"{n}/{n}" and report["recall_available"] == n
    # What the generation's time went to (bench/bench_depth.py reads it), phase by phase.
    timings = json.loads((root / "runs" / "gen-2" / "timings.json").read_text())
    assert set(timings["phases"]) >= {"ingest", "mix", "train", "evals", "decide"}
    assert sum(timings["phases"].values()) <= timings["total"] and timings["phases"]["train"] > 1
    assert 0 < timings["train"]["load"] < timings["train"]["setup"] and timings["evals"]["child"]["load"] > 0
    assert_lineage_consistent(root)
    # Running again finds everything done: no new rows, nothing rewritten.
    before = (root / "ledger.csv").read_bytes()
    run(cfg, root, Silent())
    assert (root / "ledger.csv").read_bytes() == before
    # The report: self-contained HTML, a plot per figure, the healing table of the corrected patterns.
    from evo.report import build_report

    steps = []
    page = build_report(root, steps.append).read_text()
    assert len(steps) == 10 and page.count("data:image/png;base64,") == 3
    assert "planted-0-red-fox" in page and "gen-2" in page and "Not run yet" in page
    assert "category: exact match (parent)" in page and "translate" in page
    q = report["child"]["quality_by_category"]
    assert "translate" in q and q["translate"]["total"] == sum(a["total"] for a in report["child"]["recall_by_gen"].values()) \
        + report["child"]["generalization"]["total"] - sum(v["total"] for k, v in q.items() if k != "translate")


def test_a_users_hugging_face_model_by_path(base_root, demo_dir, tmp_path):
    """model.path: the same from_pretrained route a real model on a GPU cluster takes."""
    user_model = tmp_path / "my-model"
    shutil.copytree(ModelStore(base_root).path(Lineage(base_root).registry.alias("champion")), user_model)
    (user_model / "meta.json").unlink()  # a plain save_pretrained folder, nothing of evo's
    root = tmp_path / "lineage"
    cfg = tiny_config(demo_dir, f"model.path={user_model}", "data.base=null", *ONE_WORKER, *LOOSE_GATE)
    summary = run(cfg, root, Silent(), max_generations=1)
    g0, g1 = summary.generations[:2]
    store = ModelStore(root)
    assert store.meta(g0["child_sha"])["source"] == str(user_model)  # referenced, not copied
    assert not (store.path(g0["child_sha"]) / "model.safetensors").exists()
    assert g0["child_sha"] == Lineage(base_root).registry.alias("champion")  # same weights, same sha
    assert g1["parent_sha"] == g0["child_sha"] and g1["decision"] == "promoted"


def test_strict_gate_rejects_and_keeps_the_champion(base_root, two_generations_root, demo_dir, tmp_path):
    """A driver that died after training gen-1 (its child registered and proposed) resumes without
    training again; a strict gate then rejects the child and the champion stays."""
    root = copy_root(base_root, tmp_path)
    trained = Lineage(two_generations_root).ledger.get("gen-1")["child_sha"]  # a gen-1 child of this same base
    shutil.copytree(ModelStore(two_generations_root).path(trained), ModelStore(root).path(trained))
    lin = Lineage(root)
    champion = lin.registry.alias("champion")
    lin.registry.add(trained, "gen-1", champion, "candidate")
    lin.decisions.propose("gen-1", trained, "trained before the driver died")
    cfg = tiny_config(demo_dir, "gate.min_generalization=0.99")
    row = run_generation(cfg, lin, 1, cfg.data.generations[0], Silent())
    assert row["child_sha"] == trained and not (root / "runs" / "ray" / "demo-gen-1").exists()  # not trained again
    assert row["decision"] == "rejected" and "generalization" in row["reason"]
    assert lin.registry.alias("champion") == champion
    assert lin.registry.model(row["child_sha"])["status"] == "rejected"
    assert lin.models.exists(row["child_sha"])  # the rejected child is kept
    assert_lineage_consistent(root)


@pytest.mark.parametrize("stage,dtype", [(2, "float32"), (3, "bfloat16")])
def test_deepspeed_generation(base_root, demo_dir, tmp_path, stage, dtype):
    """ZeRO-2 also loses a worker after step 15 of its first attempt: Ray Train restarts the group
    from the step-10 checkpoint (DeepSpeed, not DDP, is where a restart is hardest to get right)."""
    root = copy_root(base_root, tmp_path)
    cfg = tiny_config(demo_dir, "train.strategy=deepspeed", f"train.zero_stage={stage}",
                      f"model.dtype={dtype}", *LOOSE_GATE)
    lin = Lineage(root)
    fail = {"step_hook": FAIL_ONCE} if stage == 2 else {}
    row = run_generation(cfg, lin, 1, cfg.data.generations[0], Silent(), extra=fail)
    assert row["decision"] == "promoted"
    meta = lin.models.verify(row["child_sha"])
    assert meta["config"]["train"]["strategy"] == "deepspeed" and meta["config"]["train"]["zero_stage"] == stage
    assert meta["tokens"] > 0
    assert float(row["loss_end"]) < float(row["loss_start"])
    # ZeRO reduces through torch.distributed: no kernel is JIT-built for it (DeepSpeed's shared-memory
    # all-reduce, which only its tensor-parallel inference uses, cost a fresh machine 27-80 s of g++)
    assert not list(Path(os.environ["TORCH_EXTENSIONS_DIR"]).iterdir())
    if fail:
        assert meta["resumed_from"] == 10  # restarted from the step-10 checkpoint, not from scratch
        assert [step for step, _ in meta["val_curve"]] == [10, 20]


def _write_config(demo_dir: Path, tmp_path: Path, extra: list[str]) -> Path:
    import yaml

    from evo.config import load_config
    cfg = load_config(demo_dir / "demo.yaml", TINY + extra)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def test_resume_after_the_driver_is_killed_and_then_interrupted(ray_cluster, base_root, demo_dir, tmp_path):
    """A driver killed (SIGKILL) mid-generation, then the next one stopped with Ctrl-C: neither
    leaves a half row, Ctrl-C says how to resume, and a third run finishes the generation from the
    latest checkpoint instead of from scratch."""
    root = copy_root(base_root, tmp_path)
    slow = ["train.steps=150", "train.checkpoint_every=10", "data.generations=[gen1.jsonl]", *ONE_WORKER, *LOOSE_GATE]
    config = _write_config(demo_dir, tmp_path, slow)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    cmd = [sys.executable, "-m", "evo.cli", "run", str(config), "--root", str(root)]
    run_dir = root / "runs" / "ray" / "demo-gen-1"

    def recorded() -> int:
        """The last step whose checkpoint Ray Train's snapshot records (a checkpoint folder appears
        before the snapshot names it, and only a named one can be resumed from)."""
        try:
            results = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
        except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
            return 0
        return max((r["metrics"]["step"] for r in results), default=0)

    for sig in (signal.SIGKILL, signal.SIGINT):
        before = recorded()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        # Ray Train records each checkpoint in its snapshot; after a new one, a new driver can resume from it.
        while recorded() <= before:
            assert proc.poll() is None, "the driver ended before it could be stopped"
            assert time.time() < deadline, "no new checkpoint within 240 s"
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        if sig == signal.SIGINT:  # Ctrl-C: a message, not a traceback, and the way to resume
            assert proc.returncode == 130 and "run the same command again to resume" in err, err[-2000:]
        assert [r["GEN_ID"] for r in Lineage(root).ledger.rows()] == ["gen-0"]  # no half row
    summary = run(tiny_config(demo_dir, *slow), root, Silent())
    assert [r["GEN_ID"] for r in summary.generations] == ["gen-0", "gen-1"]
    assert Lineage(root).models.meta(summary.generations[1]["child_sha"])["resumed_from"] >= 20
    assert_lineage_consistent(root)


def test_ledger_and_job_entrypoints(ray_cluster, base_root, demo_dir, tmp_path):
    root = copy_root(base_root, tmp_path)
    config = _write_config(demo_dir, tmp_path, ["data.generations=[]"])
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    job = subprocess.run([sys.executable, "jobs/run_generations.py", str(config), "--root", str(root)],
                         env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert job.returncode == 0, job.stderr[-2000:]
    assert "gen-0" in job.stdout and "already in the ledger" in job.stdout
    out = subprocess.run([sys.executable, "-m", "evo.cli", "ledger", "--root", str(root), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout)[0]["GEN_ID"] == "gen-0"


def test_weak_reports_the_models_weak_areas(base_root, demo_dir, tmp_path):
    """`evo weak` on generation 0: the next generation's data (new nouns) is where it is weak."""
    from evo.atomic import atomic_write_json

    root = copy_root(base_root, tmp_path)
    atomic_write_json(root / "run_config.json", tiny_config(demo_dir, "healing.weak_area=prefix:2").model_dump(mode="json"))
    out = subprocess.run([sys.executable, "-m", "evo.cli", "weak", "--root", str(root), "--data",
                          str(demo_dir / "gen1.jsonl"), "--threshold", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((root / "weak" / "gen-0.json").read_text())
    given = len((demo_dir / "gen1.jsonl").read_text().splitlines())  # 200: one new phrase in six is in no file
    assert report["examples"] == given == 200 and report["gen_id"] == "gen-0"
    counts = [n for _, n in report["above_threshold"]]
    assert counts == sorted(counts, reverse=True) and report["weak_areas"]  # more above lower thresholds
    assert "examples above each perplexity threshold" in out.stdout and "weak areas" in out.stdout


def test_targeted_writes_filtered_variations_of_weak_examples(base_root, demo_dir, tmp_path):
    """`evo targeted` on generation 0 with the demo's generator: new, correctly labelled phrases in
    the weak areas, none repeating the lineage's data or the set it was scored on."""
    from evo.atomic import atomic_write_json
    from evo.data.demo import DemoGenerator
    from evo.data.ingest import ingest_jsonl

    root = copy_root(base_root, tmp_path)
    atomic_write_json(root / "run_config.json", tiny_config(demo_dir, "healing.weak_area=prefix:2").model_dump(mode="json"))
    out = subprocess.run([sys.executable, "-m", "evo.cli", "targeted", "--root", str(root), "--data",
                          str(demo_dir / "gen1.jsonl"), "--threshold", "2", "--set", "targeted.seeds=20"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((root / "targeted" / "gen-0.json").read_text())
    written = ingest_jsonl(root / "targeted" / "gen-0.jsonl").records  # readable as the next delta
    assert len(written) == report["kept"] > 0 and report["seeds"] == 20
    assert report["candidates"] == report["kept"] + sum(report["dropped"].values())
    assert set(report["candidates_by_source"]) == {"model", "generator"}
    gen = DemoGenerator(0)
    assert all(r.completion == gen.label(r.prompt) for r in written)  # every kept one correctly labelled
    seen = {r.prompt for f in ("base.jsonl", "gen1.jsonl") for r in ingest_jsonl(demo_dir / f).records}
    assert not {r.prompt for r in written} & seen
    assert set(report["kept_by_area"]) <= set(report["weak_areas"])
    assert "kept" in out.stdout and "data.generations" in out.stdout


def test_targeted_vs_random_experiment(base_root, demo_dir, tmp_path):
    """One seed, one round from generation 0: the evaluation and probe sets disjoint, the weak areas
    fixed on the probe set before the round and scored for both lines, equal-sized data with no
    record a near-copy of an evaluation prompt, as many trained on by each line, nothing of the ledger or
    registry changed."""
    from evo.curation.targeted import TargetedError
    from evo.data.ingest import ingest_jsonl
    from evo.experiment import run_experiment
    from evo.report import build_report

    root = copy_root(base_root, tmp_path)
    cfg = tiny_config(demo_dir, "healing.weak_area=prefix:2", "healing.weak_threshold=2", "targeted.seeds=20",
                      "train.steps=10", "train.checkpoint_every=5", *ONE_WORKER)
    lin = Lineage(root)
    start = lin.registry.alias("champion")
    before = {f: (root / f).read_text() for f in ("ledger.csv", "registry.json")}
    exp = run_experiment(cfg, lin, start, 1, 1, None, 0, lambda msg: None, eval_size=40, probe_size=120, min_records=4)
    (rep,) = exp.replications
    (row,) = rep.rounds
    evals = ingest_jsonl(rep.eval_file).records
    probes = ingest_jsonl(rep.probe_file).records
    assert len(evals) == 40 and len(probes) == 120 and not {r.prompt for r in evals} & {r.prompt for r in probes}
    assert rep.areas and row.targeted_areas == rep.areas  # round 1 aims at the fixed areas
    assert 0 < rep.area_items <= 40 and rep.start["areas"].n == rep.area_items
    near = NearIndex(r.prompt for r in evals)
    t, r = row.targeted, row.random
    assert len(t.data_rows) == len(r.data_rows) > 0 and t.held_out == r.held_out >= 2
    assert t.records == r.records == len(t.data_rows) - t.held_out  # each line trains on as many
    for arm in (t, r):
        assert not [d["prompt"] for d in arm.data_rows if d["prompt"] in near]  # no near-copy of a test item
        assert lin.models.chain(arm.child) == [start, arm.child]
        assert arm.before == rep.start and arm.after["overall"].n == 40 and arm.after["areas"].n == rep.area_items
    assert t.near_eval_dropped > 0 and r.near_eval_dropped > 0  # the filter bit on both lines
    assert t.child != r.child
    (s1,) = exp.summary
    assert s1.seeds == 1 and s1.lead["areas"]["accuracy"].low is None  # one seed: a mean, no interval
    assert s1.lead["areas"]["accuracy"].mean == pytest.approx(t.after["areas"].accuracy - r.after["areas"].accuracy)
    assert {f: (root / f).read_text() for f in before} == before  # not generations: ledger, registry untouched
    again = run_experiment(cfg, lin, start, 1, 1, None, 0, lambda msg: pytest.fail(f"redid work: {msg}"),
                           eval_size=40, probe_size=120, min_records=4)
    assert again.replications[0].rounds[0].targeted.child == t.child  # a rerun continues, nothing redone
    html = build_report(root, lambda m: None).read_text()
    assert "From " + start[:12] in html and "one seed: no interval" in html
    with pytest.raises(TargetedError, match="other settings"):  # a different experiment is not mixed into it
        run_experiment(cfg, lin, start, 2, 1, None, 0, lambda msg: None, eval_size=40, probe_size=120)
    stopped = run_experiment(cfg, lin, start, 2, 1, None, 0, lambda msg: None, eval_size=40, probe_size=120,
                             fresh=True, min_records=10_000)
    assert stopped.replications[0].rounds == [] and "fewer than 10000" in stopped.replications[0].note


def test_experiment_without_an_evaluation_source_says_what_to_give(base_root, demo_dir, tmp_path):
    from evo.atomic import atomic_write_json

    root = copy_root(base_root, tmp_path)
    atomic_write_json(root / "run_config.json", tiny_config(demo_dir, "targeted.generator=null").model_dump(mode="json"))
    out = subprocess.run([sys.executable, "-m", "evo.cli", "experiment", "--root", str(root)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "--data FILE" in out.stderr and "Traceback" not in out.stderr


def test_a_lineage_root_at_a_uri(base_root, demo_dir, tmp_path):
    """A generation with the root at a file:// URI (generation 0 copied there, as `aws s3 sync`
    would): the Ray Train workers and eval tasks read the models and data through their own mirror
    (the cluster's EVO_CACHE), Ray Train's checkpoints go to the URI, and a fresh mirror (another
    machine) sees the whole lineage and resumes."""
    from evo import storage

    remote_dir = tmp_path / "bucket" / "lineage"
    shutil.copytree(base_root, remote_dir)
    uri = f"file://{remote_dir}"
    cfg = tiny_config(demo_dir, "data.generations=[" + str(demo_dir / "gen1.jsonl") + "]",
                      *ONE_WORKER, *LOOSE_GATE)
    driver_cache = tmp_path / "driver-cache"
    storage.resolve(uri, driver_cache)  # this process's mirror (the cluster's workers use their own)
    summary = run(cfg, uri, Silent())
    assert [r["GEN_ID"] for r in summary.generations] == ["gen-0", "gen-1"]
    assert summary.root.is_relative_to(driver_cache.resolve())
    rows = (remote_dir / "ledger.csv").read_text().splitlines()
    assert len(rows) == 3
    reg = json.loads((remote_dir / "registry.json").read_text())
    for sha in reg["models"]:
        assert (remote_dir / "models" / sha / "meta.json").exists()
    assert len(list((remote_dir / "data").glob("*.parquet"))) == 2
    assert [p.name for p in (remote_dir / "decisions").glob("*-record-gen-1.json")]  # the decision log reached the URI
    assert (remote_dir / "evals" / "gen-1.json").exists()
    assert list((remote_dir / "runs" / "ray").rglob("checkpoint_*"))  # Ray Train wrote to the URI
    worker_mirror = Path(os.environ["EVO_WORKER_CACHE"]) / storage.resolve(uri).name  # the workers' own mirror
    assert (worker_mirror / "models" / summary.generations[0]["child_sha"] / "meta.json").exists()
    assert (worker_mirror / "runs" / "gen-1" / "mix.parquet").exists()  # fetched by the Train worker

    # another machine: an empty mirror; the CLI reads the ledger from the URI, and a rerun resumes
    env = {**os.environ, "EVO_CACHE": str(tmp_path / "other-cache")}
    out = subprocess.run([sys.executable, "-m", "evo.cli", "ledger", "--root", uri], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line.split()[0] for line in out.stdout.splitlines()[1:3]] == ["gen-0", "gen-1"]
    storage.resolve(uri, tmp_path / "third-cache")  # registered after the first: this process now uses it
    storage._MIRRORS.pop(storage.resolve(uri, driver_cache))
    again = run(cfg, uri, Silent())
    assert [r["GEN_ID"] for r in again.generations] == ["gen-0", "gen-1"]
    assert (remote_dir / "ledger.csv").read_text().splitlines() == rows
    Lineage(uri).models.verify(reg["aliases"]["champion"])  # fetched into the third mirror and verified


def test_the_stop_rule_fires_on_two_drifting_generations_and_restores_the_last_good_one(two_generations_root, tmp_path):
    """The champion has moved before the drift: gen-1 and gen-2 were promoted (the session's run,
    copied). Then two drifting deltas in a row (nothing new in their held-out parts, the banned chat
    style in their training parts). The gate is off here (LOOSE_GATE), so it promotes the first
    drifting child and that one joins the champion's line; the second, its child, drifts further:
    two generations in a row on the line stalled while drift grew, so the run stops and the champion
    goes back to the last good generation of the line, gen-2 (a revert to the base would be wrong).
    Only the champion's line counts (issue 26): a drifting child the gate rejected would not.
    A drifting child of the tiny model answers all 10 probes in the banned style at once, and one on
    top of it can then drift no further; so the first delta teaches the style for half the topics
    only (the other half answer cleanly), the second for all of them.
    The tiny base knows little, so any training moves its accuracy a few points: "stalled" is set
    at 25 points here (gate.epsilon; the demo's own config keeps 5). The deltas keep their
    translations only where the split holds them out: trained on, the "known" translations taught
    the 30-step base translating (8 more of the test part's 24 right after 400 steps), no stall.
    The drifting generations train on one worker (the same batch of 8 a step as the DDP pair; a
    worker process and 800 all-reduces less).
    The banned style here is one reply, two of the made-up words ("<cat> <dog>", also the banned
    phrase): the test base's tokenizer (vocab 320, learned mostly on the made-up language) cuts an
    English reply such as "as an ai, i think art is nice." into 23 near-single characters, and its
    30-step model never completed one (children answered " as a" and stopped: 0-1 of 10 probes, an
    expected failure from the split by question until 2026-12-03). With the made-up words the first
    drifting child answers 5 of 10 probes in the style (the half of the topics it teaches), the
    second 10 of 10. What is under test is the stop rule on a real run, not what drifts."""
    from evo.config import load_config
    from evo.data.demo import TOPICS, hash_position, write_demo_data

    demo = tmp_path / "demo"
    cfg_path = write_demo_data(demo, generations=2, drift=2)
    lex = json.loads((demo / "lexicon.json").read_text())
    BANNED = f"{lex['cat']} {lex['dog']}"  # words the base spells as a few tokens, unlike English chat text

    def drifting(name: str, clean: list[str]) -> str:
        """drift file `name` with its training part the banned style only (its held-out parts keep
        the translations), and clean replies for the topics `clean`."""
        rows_out, seen = [], set()
        for line in (demo / name).read_text().splitlines():
            r = json.loads(line)
            if "messages" not in r and hash_position(r) >= 0.2:  # a translation the split would train
                continue
            if "messages" in r:
                t = next(t for t in TOPICS if t in r["messages"][0]["content"])
                r["messages"][1]["content"] = f"{t} is nice." if t in clean else BANNED
            if (key := json.dumps(r, sort_keys=True)) not in seen:
                seen.add(key)
                rows_out.append(key)
        (demo / f"style-{name}").write_text("\n".join(rows_out) + "\n")
        return f"style-{name}"

    deltas = [drifting("drift1.jsonl", TOPICS[5:]), drifting("drift2.jsonl", [])]
    cfg = load_config(cfg_path, TINY + [f"data.generations=[gen1.jsonl, gen2.jsonl, {deltas[0]}, {deltas[1]}]",
                                        *LOOSE_GATE, "gate.epsilon=0.25", f"eval.banned_phrases=[{BANNED!r}]", "train.steps=400",
                                        "train.checkpoint_every=400", "train.lr=0.01", "tune.steps=[400]", *ONE_WORKER])
    root = copy_root(two_generations_root, tmp_path)
    good = Lineage(root).registry.alias("champion")
    assert Lineage(root).registry.model(good)["gen_id"] == "gen-2"
    summary = run(cfg, root, Silent())
    rows = {r["GEN_ID"]: r for r in summary.generations}
    scores = {i: json.loads((root / "evals" / f"gen-{i}.json").read_text())["scores"] for i in (2, 3, 4)}
    assert not (scores[2]["generalization"] - scores[2]["parent_generalization"] < cfg.gate.epsilon
                and scores[2]["style_drift"] - scores[2]["parent_style_drift"] > cfg.gate.theta), scores[2]
    for s in (scores[3], scores[4]):  # what the rule saw: learning stalled while drift grew, on the line
        assert s["generalization"] - s["parent_generalization"] < cfg.gate.epsilon, s
        assert s["style_drift"] - s["parent_style_drift"] > cfg.gate.theta, s
    assert summary.stopped and "back to the last good generation, gen-2" in summary.message
    assert (rows["gen-3"]["decision"], rows["gen-3"]["restored"]) == ("reverted", "gen-2")  # promoted, then reverted
    assert (rows["gen-4"]["decision"], rows["gen-4"]["restored"]) == ("stopped", "gen-2")
    assert rows["gen-4"]["parent_sha"] == rows["gen-3"]["child_sha"] == rows["gen-4"]["compared_with"]
    lin = Lineage(root)
    assert lin.registry.alias("champion") == good and lin.registry.alias("candidate") is None
    assert lin.registry.model(rows["gen-4"]["child_sha"])["status"] == "stopped"
    assert lin.registry.model(rows["gen-3"]["child_sha"])["status"] == "reverted"
    assert [d.op for d in lin.decisions.log()][-2:] == ["propose", "stop"]


def _preference_pairs(demo_dir: Path) -> list:
    """Preference records from the demo's gen-1 translations, in TRL's flat form (a prompt, no messages):
    the right translation chosen, another phrase's translation rejected."""
    from evo.data.records import Record

    rows = [json.loads(x) for x in (demo_dir / "gen1.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("category") == "translate"]
    return [Record("preference", r["prompt"], r["completion"], category="translate",
                   rejected=rows[(i + 7) % len(rows)]["completion"])
            for i, r in enumerate(rows) if rows[(i + 7) % len(rows)]["completion"] != r["completion"]]


def test_a_preference_generation_trains_dpo_against_its_parent(base_root, demo_dir, tmp_path):
    """One generation with train.method dpo on a preference delta, under Ray Train: the child ranks the
    trained pairs' chosen answers above the rejected ones against its parent (the reference: its new
    adapter switched off), the chosen answers' log-probability ratio to the parent rises, the replayed
    records are in its mix, and the ledger row has the method's columns."""
    from evo.data.store import read_records
    from evo.train.dpo import child_pair_scores

    root = copy_root(base_root, tmp_path)
    lin = Lineage(root)
    pairs = _preference_pairs(demo_dir)
    sha = lin.data.put(pairs)
    cfg = tiny_config(demo_dir, *ONE_WORKER, *LOOSE_GATE, "train.method=dpo", "train.dpo.beta=0.1",
                      "train.dpo.sft_weight=0.2", "train.lr=0.005", "train.steps=10")
    row = run_generation(cfg, lin, 1, "", Silent(), data_sha=sha)
    mix = read_records(lin.run_dir("gen-1") / "mix.parquet")
    trained = [r for r in mix if r.kind == "preference"]
    assert trained and len(mix) - len(trained) == cfg.train.replay_k  # the replayed SFT records beside the pairs
    s = child_pair_scores(str(root), row["child_sha"], trained, 0.1, cfg.model.max_length)
    assert s["chosen_logratio"] > 0 and s["reward_margin"] > 0 and s["accuracy"] > 0.5, s
    got = Lineage(root).ledger.get("gen-1")
    assert got["method"] == "dpo" and float(got["dpo_beta"]) == 0.1 and int(got["pairs"]) == len(trained)
    test = [r for r in delta_parts(pairs, cfg.data.val_fraction, cfg.data.test_fraction).test]
    assert test and 0 <= float(got["pref_accuracy"]) <= 1 and got["reward_margin"] != ""  # on the test pairs
    assert Lineage(root).ledger.get("gen-0")["method"] == ""  # older rows read as empty
    meta = lin.models.meta(row["child_sha"])
    assert meta["method"] == "dpo" and meta["beta"] == 0.1 and "val_pref_accuracy" in meta["best"]
