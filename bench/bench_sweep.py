"""A 4-trial Ray Tune sweep of one demo generation on this machine, against one plain Ray Train run
of the same generation measured in the same process.

    .venv/bin/python bench/bench_sweep.py

Reports trials per minute, time to the first trial, how many trials ASHA stopped early, and each
trial's fixed cost (Ray Train start-up, model loading, teardown: wall time minus time in steps and
checkpoints) against its wall time. Goal: fixed cost under 25% of a trial's wall time.
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).parent))

import ray  # noqa: E402
from report import update_section  # noqa: E402

from evo.atomic import read_json  # noqa: E402
from evo.config import load_config  # noqa: E402
from evo.data.demo import write_demo_data  # noqa: E402
from evo.driver import generation_zero, run_generation  # noqa: E402
from evo.lineage.root import Lineage  # noqa: E402
from evo.progress import Progress  # noqa: E402
from evo.ray_start import WORKER_ENV  # noqa: E402


def main(argv: list[str]) -> None:
    """`--steps A B`: the same sweep with other step choices (written to its own section), to see
    how the fixed cost's share falls as trials get longer."""
    steps = [int(x) for x in argv[argv.index("--steps") + 1:]] if "--steps" in argv else None
    work = Path(tempfile.mkdtemp(prefix="evo-bench-sweep-"))
    demo_yaml = write_demo_data(work / "data", generations=1)
    extra = [f"tune.steps={steps}", f"train.checkpoint_every={max(50, min(steps) // 6)}"] if steps else []
    cfg = load_config(demo_yaml, extra)
    ray.init(address="local", runtime_env={"env_vars": WORKER_ENV})
    generation_zero(cfg, Lineage(work / "base"), Progress())
    # Baseline: the same generation as one plain Ray Train run, shaped like one trial.
    shutil.copytree(work / "base", work / "plain")
    t = cfg.tune
    plain_cfg = load_config(demo_yaml, extra + [f"train.num_workers={t.num_workers}",
                                                f"train.cpus_per_worker={t.cpus_per_worker}",
                                                f"train.steps={max(t.steps)}", f"train.replay_k={max(t.replay_k)}"])
    lin = Lineage(work / "plain")
    t0 = time.perf_counter()
    row = run_generation(plain_cfg, lin, 1, cfg.data.generations[0], Progress())
    plain_wall = time.perf_counter() - t0
    meta = lin.models.meta(row["child_sha"])
    plain_train = meta["train_wall_seconds"]
    plain_fixed = plain_train - meta["train_seconds"] - (meta.get("checkpoint_seconds") or 0)
    # The sweep.
    shutil.copytree(work / "base", work / "sweep")
    lin = Lineage(work / "sweep")
    t0 = time.perf_counter()
    row = run_generation(cfg, lin, 1, cfg.data.generations[0], Progress(), tune=True)
    sweep_wall = time.perf_counter() - t0
    timing = read_json(lin.run_dir("gen-1") / "sweep_timing.json")
    with open(lin.root / "trials" / "gen-1.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    ray.shutdown()
    ran = [tr for tr in trials if tr["status"] != "error"]
    fixed = [float(tr["seconds"]) - float(tr["train_seconds"]) for tr in ran]
    from evo.tune.sweep import read_reports

    def breakdown(tr) -> tuple[float, float]:
        """(trial start to the training loop's start: Ray Train's controller, worker start-up and
        imports; the loop's set-up: loading the parent, wrapping it, encoding the data)"""
        rows = read_reports(lin.run_dir("gen-1") / "trial_reports" / f"{tr['trial_id']}.jsonl")
        first = rows[0] if rows else {}
        if "loop_started_at" not in first:
            return float("nan"), float("nan")
        return first["loop_started_at"] - first["trial_started"], first["setup_seconds"]

    parts = [breakdown(tr) for tr in ran]
    share = [f / float(tr["seconds"]) for f, tr in zip(fixed, ran)]
    stopped = sum(tr["status"] == "stopped early" for tr in trials)
    starts = sorted(float(tr["started"]) for tr in ran)
    chosen = next(tr for tr in trials if tr["chosen"] == "yes")
    lines = [
        ("Demo config, " if not steps else f"Demo config with longer trials (tune.steps={steps}, checkpoint every "
                                           f"{cfg.train.checkpoint_every}), ")
        + f"generation 1; {len(trials)} trials, {t.max_concurrent} at a time, {t.num_workers} Ray Train "
        f"worker each ({t.cpus_per_worker} CPU), ASHA on val loss; steps {t.steps}, replay k {t.replay_k}, "
        f"lr {t.lr[0]:g}..{t.lr[1]:g}.",
        "",
        "| trial | lr | steps | replay k | status | wall s | in steps + checkpoints s | fixed s | fixed share "
        "| of which: to loop start s | loop set-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tr, f, sh, (boot, setup) in zip(ran, fixed, share, parts):
        lines.append(f"| {tr['trial_id']}{' (chosen)' if tr is chosen else ''} | {float(tr['lr']):.3g} | {tr['steps']} | "
                     f"{tr['replay_k']} | {tr['status']} | {float(tr['seconds']):.1f} | {float(tr['train_seconds']):.1f} | "
                     f"{f:.1f} | {sh:.0%} | {boot:.1f} | {setup:.1f} |")
    lines += [
        "",
        f"- Sweep (Tune fit) {timing['seconds']:.0f} s, whole generation with the evals that pick the winner "
        f"{sweep_wall:.0f} s: **{len(trials) / (timing['seconds'] / 60):.1f} trials per minute**.",
        f"- Time to the first trial (sweep start to the first trial's start): "
        f"{(starts[0] - timing['started_at']) if starts else float('nan'):.1f} s.",
        f"- ASHA stopped {stopped} of {len(trials)} trials early.",
        f"- Fixed cost per trial: median {statistics.median(fixed):.1f} s, **{statistics.median(share):.0%} of a trial's "
        f"wall time** (goal < 25%). The same generation as one plain Ray Train run ({max(t.steps)} steps): fixed cost "
        f"{plain_fixed:.1f} s of {plain_train:.1f} s ({plain_fixed / plain_train:.0%}); generation {plain_wall:.0f} s. "
        f"Of the plain run's: {meta.get('ray_startup_seconds') or float('nan'):.1f} s to the loop's start, "
        f"{meta.get('setup_seconds') or float('nan'):.1f} s of set-up, {meta.get('ray_teardown_seconds') or float('nan'):.1f} s "
        f"after the loop ends. A trial's fixed cost is {statistics.median(fixed) / plain_fixed:.2f}x the plain run's; "
        f"median to loop start {statistics.median(b for b, _ in parts):.1f} s, "
        f"set-up {statistics.median(u for _, u in parts):.1f} s.",
        f"- Winner: {chosen['trial_id']} (lr {float(chosen['lr']):.3g}, {chosen['steps']} steps, replay k {chosen['replay_k']}), "
        f"generalization {chosen['eval_generalization']}, recall {chosen['eval_recall'] or 'n/a'}; decision {row['decision']}.",
    ]
    body = "\n".join(lines)
    print(body)
    update_section("sweep-long" if steps else "sweep", body)


if __name__ == "__main__":
    main(sys.argv[1:])
