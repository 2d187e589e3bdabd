"""What tracking a lineage in MLflow costs a generation: the tiny demo with tracking off and on (the
embedded store), in one process.

    flock /tmp/evo-ray.lock .venv/bin/python bench/bench_tracking.py [--generations 2]

Builds the demo's generation 0 once (tracking off), copies the root twice, then runs each later
generation on both copies, off then on, one after the other on the same Ray cluster. Three figures per
generation: the wall time of `run_generation` on each copy (their difference is noisy on a shared
machine), the time spent in tracking's calls the generation waits for (`live.start`, `Live.finish`,
the decisions module's `after_decision`), and the time of the tracker's own thread beside it
(`Live._open`: importing mlflow, the store, a sync, the run; `Live.send_new`: the workers' reports as
they appear), each timed around every call. The first tracked generation's thread also pays the
one-time costs: importing mlflow, creating the SQLite store (its schema migrations) and sending the
base's run.

Last line: `overhead_pct=<first>,<later> tracked_s=<first>,<later> thread_s=<first>,<later>
gen_s=<off>,<on>` (tracked: on the driver's path; thread: in the tracker's thread, beside the
generation). Goal: under 3% of a generation's wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
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

SPENT = {"path": 0.0, "thread": 0.0}  # in tracking's calls: on the driver's thread, in the tracker's


def timed(fn):
    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            SPENT["path" if threading.current_thread() is threading.main_thread() else "thread"] += \
                time.perf_counter() - t0
    return wrapper


def instrument() -> None:
    """Time every tracking call a generation makes (the functions the driver and decisions call, and
    the tracker thread's: opening the run, sending the workers' reports)."""
    live.start = timed(live.start)
    live.Live.finish = timed(live.Live.finish)
    live.Live.send_new = timed(live.Live.send_new)
    live.Live._open = timed(live.Live._open)
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
        SPENT.update(path=0.0, thread=0.0)
        t0 = time.perf_counter()
        run_generation(on, Lineage(roots["on"]), index, path, Silent())
        t_on = time.perf_counter() - t0
        rows.append((index, t_off, t_on, SPENT["path"], SPENT["thread"]))
        print(f"gen-{index}: off {t_off:.1f} s, on {t_on:.1f} s, in tracking's calls on the driver's path "
              f"{SPENT['path']:.2f} s ({100 * SPENT['path'] / t_on:.1f}%), in its thread {SPENT['thread']:.2f} s")
    ray.shutdown()
    v = view.View(roots["on"], live.files.read_target(roots["on"]))
    runs = v.client.search_runs([v.experiment()])
    assert len(runs) == 1 + args.generations, [r.info.run_name for r in runs]
    first, later = rows[0], rows[-1]
    table = "\n".join(f"| gen-{i} | {a:.1f} | {b:.1f} | {p:.2f} | {100 * p / b:.1f}% | {t:.2f} |"
                      for i, a, b, p, t in rows)
    update_section("tracking", f"""
## Tracking in MLflow: what it costs a generation (`bench/bench_tracking.py`)

The tiny demo (`demo.yaml`, defaults), each generation run on two copies of one root in one process:
tracking off, then on (the embedded SQLite store). "On the driver's path" is the time spent inside
`evo.tracking`'s calls that the generation waits for (start, finish, the decisions module's alias
moves), timed around each call; "in the tracker's thread" is what runs beside the generation while
Ray Train trains (opening the run: importing mlflow, the store, a sync; sending the workers' reports
as they appear). It takes CPU the generation could use; the wall times of the two copies differ by
that, by the path's share, and by the noise of a machine shared with other work.

| generation | off (s) | on (s) | on the driver's path (s) | share of the tracked generation | in the tracker's thread (s) |
|---|---|---|---|---|---|
{table}

gen-1's thread also pays the one-time costs: importing mlflow (each process, so each fine-tuning job),
creating the store (its SQLite schema) and sending generation 0's run, which was made before tracking
was on. On the driver's path: {100 * first[3] / first[2]:.1f}% of gen-1, {100 * later[3] / later[2]:.1f}% of
gen-{later[0]} (goal: under 3% of a generation's wall time).
""")
    print(f"overhead_pct={100 * first[3] / first[2]:.1f},{100 * later[3] / later[2]:.1f} "
          f"tracked_s={first[3]:.2f},{later[3]:.2f} thread_s={first[4]:.2f},{later[4]:.2f} "
          f"gen_s={later[1]:.1f},{later[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
