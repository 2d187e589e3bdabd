"""Autoscaling, shown on this machine: a sweep's pending trials make Ray's autoscaler add nodes,
and the nodes are released once idle.

    .venv/bin/python bench/demo_autoscaling.py

Starts its own Ray head (`ray start --head --block`, non-default ports, token auth) with Ray's fake
multi-node provider: "nodes" are extra raylets on this machine, launched and terminated by the
real autoscaler exactly as it would launch and terminate cloud instances. The head has 1 CPU, so
nothing trains there; each trial needs 2 workers x 1 CPU, so every running trial needs a worker
node of 2 CPUs (0 to 2 of them). A sweep of 2 trials, 2 at a time, is submitted as a Ray job; the
node count is sampled from the dashboard's state API every 2 s until the idle nodes are gone.
Only the processes this script started are stopped (never `ray stop`). The timeline goes into
docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
REPO = Path(__file__).parents[1]
SETTINGS = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2", "model.tiny.intermediate_size=128",
    "model.tiny.vocab_size=320", "model.max_length=48", "model.pretrain.steps=60", "train.batch_size=8",
    "train.checkpoint_every=10", "train.num_workers=2", "tune.num_workers=2", "tune.cpus_per_worker=1",
    "tune.num_samples=2", "tune.max_concurrent=2", "tune.steps=[40]", "tune.scheduler=none",
    "eval.max_items=24", "eval.max_new_tokens=12",
]


def main() -> None:
    from report import update_section

    from evo.data.demo import write_demo_data
    from evo.testing.local_head import LocalHead, fake_autoscaling_config

    work = Path(tempfile.mkdtemp(prefix="evo-autoscale-"))
    demo = write_demo_data(work / "data", generations=1)
    sets = [a for s in SETTINGS for a in ("--set", s)]
    timeline: list[tuple[float, int, str]] = []
    state, done_at = "PENDING", None
    with LocalHead(16491, 1, fake_autoscaling_config(16491, 1, 2, 2, 0.1)) as head:
        head.job("submit", "--no-wait", "--submission-id", "evo-autoscale", "--", sys.executable,
                 str(REPO / "jobs" / "sweep.py"), str(demo), "--root", str(work / "lineage"), *sets).check_returncode()
        t0 = time.time()
        while time.time() - t0 < 900:
            if state not in ("SUCCEEDED", "FAILED", "STOPPED"):
                state = head.job_state("evo-autoscale")
                if state in ("SUCCEEDED", "FAILED", "STOPPED"):
                    done_at = time.time() - t0
            n = head.alive_nodes()
            timeline.append((time.time() - t0, n, state))
            print(f"{timeline[-1][0]:6.1f}s  nodes alive: {n}  job: {state}", flush=True)
            if done_at is not None and n == 1:
                break
            time.sleep(2)
        logs = head.job("logs", "evo-autoscale").stdout
    peak = max(n for _, n, _ in timeline)
    first_up = next((t for t, n, _ in timeline if n > 1), None)
    released = next((t for t, n, s in timeline if s == "SUCCEEDED" and n == 1), None)
    winner = next((line.split("|", 1)[1].strip() for line in logs.splitlines() if "winner: trial" in line), "")
    changes = [timeline[0]] + [r for a, r in zip(timeline, timeline[1:]) if (a[1], a[2]) != (r[1], r[2])]
    body = "\n".join([
        "Ray's fake multi-node provider on this machine: a 1-CPU head that trains nothing, worker nodes of 2 CPUs "
        "(0 to 2), idle timeout 6 s; a sweep of 2 trials (2 at a time, 2 workers x 1 CPU each) submitted as a Ray job.",
        "",
        "| time s | nodes alive | job |",
        "|---|---|---|",
        *[f"| {t:.0f} | {n} | {s} |" for t, n, s in changes],
        "",
        f"- Nodes alive went from 1 to {peak} (first added {first_up:.0f} s after submission); the job "
        f"{state.lower()} at {done_at:.0f} s; back to the head alone at {released:.0f} s." if first_up and released and done_at
        else f"- Peak nodes {peak}; job {state}.",
        f"- {winner}" if winner else "",
    ])
    print(body)
    if state == "SUCCEEDED":
        update_section("autoscaling", body)


if __name__ == "__main__":
    main()
