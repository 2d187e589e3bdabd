"""What tracking a lineage in MLflow costs a generation: the tiny demo with tracking off and on (the
embedded store), in one process.

    flock /tmp/evo-ray.lock .venv/bin/python bench/bench_tracking.py [--generations 2]

Builds the demo's generation 0 once (tracking off), copies the root twice, then runs each later
generation on both copies, off then on, one after the other on the same Ray cluster. Two figures per
generation: the wall time of `run_generation` on each copy (their difference is noisy on a shared
machine), and the time spent in tracking's own calls on the tracked copy, timed around each of them
(`live.start`, `Live.finish`, the decisions module's `after_decision`; the thread that sends the
workers' reports as they appear is not on the generation's path, and its sends are timed too). The
first tracked generation also pays the one-time costs: importing mlflow, creating the SQLite store
(its schema migrations) and sending the base's run.

Last line: `overhead_pct=<first>,<later> tracked_s=<first>,<later> gen_s=<off>,<on>`. Goal: under 3%
of a generation's wall time for a later generation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).parent))

import ray  # noqa: E402
from report import update_section  # noqa: E402

from evo.config import load_config  # noqa: E402
from evo.data.demo import write_demo_data  # noqa: E402
from evo.driver import generation_zero, run_generation  # noqa: E402
from evo.lineage import decisions as decisions_module  # noqa: E402
from evo.lineage.root import Lineage  # noqa: E402
from evo.progress import Silent  # noqa: E402
from evo.tracking import live, view  # noqa: E402

SPENT = {"s": 0.0}


def timed(fn):
    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            SPENT["s"] += time.perf_counter() - t0
    return wrapper


def instrument() -> None:
    """Time every tracking call a generation makes (the functions the driver and decisions call)."""
    live.start = timed(live.start)
    live.Live.finish = timed(live.Live.finish)
    live.Live.send_new = timed(live.Live.send_new)
    decisions_module.after_decision = timed(decisions_module.after_decision)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generations", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evo-bench-tracking-"))
    write_demo_data(work / "data", generations=args.generations)
    off = load_config(work / "data" / "demo.yaml", ["tracking.backend=off"])
    on = load_config(work / "data" / "demo.yaml", ["tracking.backend=embedded"])
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    base = work / "base"
    generation_zero(off, Lineage(base), Silent())
    roots = {"off": work / "off", "on": work / "on"}
    for r in roots.values():
        shutil.copytree(base, r)
    instrument()
    rows = []
    for index, path in enumerate(on.data.generations[: args.generations], start=1):
        t0 = time.perf_counter()
        run_generation(off, Lineage(roots["off"]), index, path, Silent())
        t_off = time.perf_counter() - t0
        SPENT["s"] = 0.0
        t0 = time.perf_counter()
        run_generation(on, Lineage(roots["on"]), index, path, Silent())
        t_on = time.perf_counter() - t0
        rows.append((index, t_off, t_on, SPENT["s"]))
        print(f"gen-{index}: off {t_off:.1f} s, on {t_on:.1f} s, in tracking's calls {SPENT['s']:.2f} s "
              f"({100 * SPENT['s'] / t_on:.1f}%)")
    ray.shutdown()
    v = view.View(roots["on"], live.files.read_target(roots["on"]))
    runs = v.client.search_runs([v.experiment()])
    assert len(runs) == 1 + args.generations, [r.info.run_name for r in runs]
    first, later = rows[0], rows[-1]
    table = "\n".join(f"| gen-{i} | {a:.1f} | {b:.1f} | {s:.2f} | {100 * s / b:.1f}% |" for i, a, b, s in rows)
    update_section("tracking", f"""
## Tracking in MLflow: what it costs a generation (`bench/bench_tracking.py`)

The tiny demo (`demo.yaml`, defaults), each generation run on two copies of one root in one process:
tracking off, then on (the embedded SQLite store). "In tracking's calls" is the time spent inside
`evo.tracking`'s calls on the generation's path (start, finish, the decisions module's alias moves)
and in the thread that sends the workers' reports as they appear, timed around each call; the wall
times of the two copies differ by that and by the noise of a machine shared with other work.

| generation | off (s) | on (s) | in tracking's calls (s) | share of the tracked generation |
|---|---|---|---|---|
{table}

gen-1 also pays the one-time costs, all inside its figure: importing mlflow, creating the store (its
SQLite schema) and sending generation 0's run, which was made before tracking was on.
A later generation pays only its own runs, metrics, artifacts, logged model and registry calls:
{100 * later[3] / later[2]:.1f}% of its wall time (goal: under 3%).
""")
    print(f"overhead_pct={100 * first[3] / first[2]:.1f},{100 * later[3] / later[2]:.1f} "
          f"tracked_s={first[3]:.2f},{later[3]:.2f} gen_s={later[1]:.1f},{later[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
