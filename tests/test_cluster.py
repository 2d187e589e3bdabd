"""evo on real multi-process Ray clusters on this machine: a sweep spread over two nodes; a sweep
submitted as a Ray job through the Jobs API to a head started with `ray start`; and the same job on
an autoscaling cluster (Ray's fake multi-node provider) that grows for the trials and shrinks after.

Each test starts its own cluster on non-default ports and stops only the processes it started
(never `ray stop`, which would kill every Ray process on the machine)."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.integration
REPO = Path(__file__).parents[1]
SWEEP = ["tune.num_samples=2", "tune.max_concurrent=2", "tune.steps=[10]", "tune.replay_k=[0, 20]",
         "train.checkpoint_every=5", "tune.evaluate_top=2", "tune.scheduler=none",
         "gate.min_recall=null", "gate.min_generalization=null", "gate.max_style_drift=null"]


def read_trials(root: Path, gid: str = "gen-1") -> list[dict]:
    with open(root / "trials" / f"{gid}.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_sweep_spreads_trials_over_two_nodes(demo_dir, tmp_path):
    """Two nodes of 3 CPUs each; each trial's two workers need 2 CPUs, so the two trials that run
    at once cannot share a node."""
    import ray
    from ray.cluster_utils import Cluster

    from evo.cli import WORKER_ENV
    from evo.config import load_config
    from evo.driver import Lineage, generation_zero, run_generation
    from evo.progress import Silent

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3})
    cluster.add_node(num_cpus=3)
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": WORKER_ENV})
        cluster.wait_for_nodes()
        cfg = load_config(demo_dir / "demo.yaml", TINY + SWEEP + [
            "tune.num_workers=2", "tune.cpus_per_worker=1", "tune.driver_cpus=0.1"])
        lin = Lineage(tmp_path / "lineage")
        generation_zero(cfg, lin, Silent())
        row = run_generation(cfg, lin, 1, cfg.data.generations[0], Silent(), tune=True)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    trials = read_trials(lin.root)
    assert [t["status"] for t in trials] == ["completed", "completed"]
    assert {t["node"] for t in trials} == nodes and len(nodes) == 2  # one trial on each node
    assert row["trial"] in {t["trial_id"] for t in trials}


@pytest.fixture
def ray_head():
    """A Ray head of its own (`ray start --head --block`, non-default ports, a fresh token)."""
    from evo.testing.local_head import LocalHead

    with LocalHead(base_port=16391, num_cpus=3) as head:
        yield head


def test_a_sweep_job_through_the_jobs_api(ray_head, demo_dir, tmp_path):
    root = tmp_path / "lineage"
    sets = [a for s in TINY + SWEEP + ["tune.num_workers=1", "tune.cpus_per_worker=0.5"] for a in ("--set", s)]
    entry = [sys.executable, str(REPO / "jobs" / "sweep.py"), str(demo_dir / "demo.yaml"), "--root", str(root), *sets]
    # Submitted through the Jobs API; the CLI follows the job's logs until it ends.
    job = ray_head.job("submit", "--submission-id", "evo-sweep-test", "--", *entry, timeout=600)
    logs = job.stdout + job.stderr
    assert job.returncode == 0 and ray_head.job_state("evo-sweep-test") == "SUCCEEDED", logs[-3000:]
    assert "winner: trial" in logs and "gen-1" in logs  # the driver's progress, followed live
    from evo.lineage.ledger import Ledger

    rows = Ledger(root).rows()
    assert [r["GEN_ID"] for r in rows] == ["gen-0", "gen-1"]
    trials = read_trials(root)
    assert len(trials) == 2 and rows[1]["trial"] in {t["trial_id"] for t in trials}


def test_pending_trials_make_the_autoscaler_add_nodes_and_idle_ones_go(demo_dir, tmp_path):
    """Ray's fake multi-node provider: the real autoscaler launches and terminates raylets on this
    machine as it would cloud nodes. A 1-CPU head cannot place a trial (2 workers x 1 CPU), so each
    running trial needs a 2-CPU worker node; when the job ends the nodes idle out (6 s)."""
    from evo.testing.local_head import LocalHead, fake_autoscaling_config

    sets = [a for s in TINY + SWEEP + ["train.num_workers=2", "tune.num_workers=2", "tune.cpus_per_worker=1"]
            for a in ("--set", s)]
    entry = [sys.executable, str(REPO / "jobs" / "sweep.py"), str(demo_dir / "demo.yaml"),
             "--root", str(tmp_path / "lineage"), *sets]
    seen, state = [], "PENDING"
    with LocalHead(16591, 1, fake_autoscaling_config(16591, 1, 2, 2, 0.1)) as head:
        assert head.job("submit", "--no-wait", "--submission-id", "evo-scale", "--", *entry).returncode == 0
        t0 = time.time()
        while time.time() - t0 < 480:  # bounded
            if state not in ("SUCCEEDED", "FAILED", "STOPPED"):
                state = head.job_state("evo-scale")
            seen.append((state, head.alive_nodes()))
            if state in ("SUCCEEDED", "FAILED", "STOPPED") and seen[-1][1] == 1:
                break
            time.sleep(2)
        logs = head.job("logs", "evo-scale").stdout
    assert state == "SUCCEEDED", logs[-3000:]
    assert max(n for _, n in seen) == 3  # head + a node for each of the two concurrent trials
    assert seen[-1] == ("SUCCEEDED", 1)  # and the idle nodes were released
