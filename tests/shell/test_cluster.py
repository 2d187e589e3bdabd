"""evo on real multi-process Ray clusters on this machine: a PBT sweep spread over two nodes; a sweep
submitted as a Ray job through the Jobs API to a head started with `ray start`, on an autoscaling
cluster (Ray's fake multi-node provider) that grows for the trials and shrinks after.

Each cluster runs on non-default ports, and only the processes it started are stopped (never
`ray stop`, which would kill every Ray process on the machine). The sweep job runs once for the
module; one test checks what its user sees (the CLI, the ledger), another what the cluster did."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import TINY, copy_root, ensure_base

pytestmark = pytest.mark.integration
REPO = Path(__file__).parents[2]
SWEEP = ["tune.num_samples=2", "tune.max_concurrent=2", "tune.steps=[10]", "tune.replay_k=[0, 20]",
         "train.checkpoint_every=5", "tune.evaluate_top=2", "tune.scheduler=none",
         "gate.min_recall=null", "gate.min_generalization=null", "gate.max_style_drift=null"]


def read_trials(root: Path, gid: str = "gen-1") -> list[dict]:
    with open(root / "trials" / f"{gid}.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_pbt_sweep_over_two_nodes_with_a_uri_root(demo_dir, tmp_path, _base_cache):
    """Two nodes of 3 CPUs each; each trial's worker needs 2 CPUs, so the two trials that run at
    once cannot share a node. Population based training: after the first checkpoint the weaker
    trial continues from the stronger one's checkpoint, made on the other node. The lineage root is
    a file:// URI, so trials, Train runs and Tune's own state all go through the URI code path, each
    process with its own mirror of the root. (The session's tiny generation 0 is built here if no
    test has built it yet.)"""
    import ray
    from ray.cluster_utils import Cluster

    from evo import storage
    from evo.config import load_config
    from evo.driver import run_generation
    from evo.lineage.root import Lineage
    from evo.progress import Silent
    from evo.ray_start import WORKER_ENV
    from evo.testing.clusters import start_patiently

    holder: list = []

    def start() -> Cluster:
        holder.append(Cluster(initialize_head=True, head_node_args={"num_cpus": 3}))
        holder[-1].add_node(num_cpus=3)
        holder[-1].wait_for_nodes()
        return holder[-1]

    def cleanup() -> None:
        if holder:
            holder.pop().shutdown()

    cluster = start_patiently(start, "a two-node test cluster", cleanup)
    try:
        env = {**WORKER_ENV, "EVO_CACHE": str(tmp_path / "worker-cache")}
        ray.init(address=cluster.address, runtime_env={"env_vars": env})
        # 2 trials of 10 steps, a checkpoint every 5: one exploit step after the first checkpoint
        cfg = load_config(demo_dir / "demo.yaml", TINY + SWEEP + [
            "tune.num_workers=1", "tune.cpus_per_worker=2", "tune.driver_cpus=0.1", "tune.scheduler=pbt",
            "tune.pbt_synch=true", "tune.perturbation_interval=1", "tune.lr=[0.0005, 0.005]"])
        remote = copy_root(ensure_base(demo_dir, _base_cache), tmp_path / "bucket")  # as `aws s3 sync` would
        uri = f"file://{remote}"
        storage.resolve(uri, tmp_path / "driver-cache")
        lin = Lineage(uri)
        assert lin.location == uri and lin.root != remote
        row = run_generation(cfg, lin, 1, cfg.data.generations[0], Silent(), tune=True)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    trials = read_trials(remote)
    assert [t["status"] for t in trials] == ["completed", "completed"]
    assert {t["node"] for t in trials} == nodes and len(nodes) == 2  # one trial on each node
    assert row["trial"] in {t["trial_id"] for t in trials}
    assert all(int(t["iterations"]) >= 2 for t in trials)  # every report, read back from the trials' own logs
    assert len(list((remote / "runs" / "gen-1" / "trial_reports").glob("*.jsonl"))) == 2
    assert list((remote / "runs" / "tune").iterdir())  # Tune's experiment state, at the URI
    cloned = [p.name for p in (remote / "runs" / "ray").iterdir() if "-from-" in p.name]
    assert cloned  # at least one exploit: a Train run that started from another trial's checkpoint


@pytest.fixture(scope="module")
def autoscaled_sweep_job(demo_dir, tmp_path_factory, _base_cache):
    """`ray job submit` of jobs/sweep.py to a head of its own (`ray start --head --block`, a fresh
    token) with Ray's fake multi-node autoscaler. A 1-CPU head cannot place a trial (2 workers x
    1 CPU), so each running trial needs a 2-CPU worker node; when the job ends the nodes idle out
    (6 s). The CLI follows the job's logs to its end while the nodes are counted every second
    through the dashboard's state API; afterwards, until the idle nodes are gone (bounded).
    The root starts with the session's generation 0 when a test built it already; otherwise the
    job builds it (on a node the autoscaler adds for it)."""
    import threading

    from evo.testing.local_head import LocalHead, fake_autoscaling_config

    dest = tmp_path_factory.mktemp("cluster-job")
    root = copy_root(_base_cache["folder"], dest) if _base_cache.get("built") else dest / "lineage"
    sets = [a for s in TINY + SWEEP + ["train.num_workers=2", "tune.num_workers=2", "tune.cpus_per_worker=1"]
            for a in ("--set", s)]
    entry = [sys.executable, str(REPO / "jobs" / "sweep.py"), str(demo_dir / "demo.yaml"), "--root", str(root), *sets]
    nodes: list[int] = []
    done = threading.Event()
    with LocalHead(16591, 1, fake_autoscaling_config(16591, 1, 2, 2, 0.1)) as head:
        def count_nodes() -> None:
            while not done.is_set():
                try:
                    nodes.append(head.alive_nodes())
                except OSError:  # a dashboard too busy to answer this second; the next poll will do
                    pass
                done.wait(1)

        poller = threading.Thread(target=count_nodes, daemon=True)
        poller.start()
        try:
            job = head.job("submit", "--submission-id", "evo-sweep-test", "--", *entry, timeout=900)
            state = head.job_state("evo-sweep-test")
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and (not nodes or nodes[-1] != 1):
                time.sleep(1)
        finally:
            done.set()
            poller.join(30)
    return {"root": root, "job": job, "state": state, "nodes": nodes}


def test_a_sweep_job_through_the_jobs_api(autoscaled_sweep_job):
    job, root = autoscaled_sweep_job["job"], autoscaled_sweep_job["root"]
    logs = job.stdout + job.stderr
    assert job.returncode == 0 and autoscaled_sweep_job["state"] == "SUCCEEDED", logs[-3000:]
    assert "winner: trial" in logs and "gen-1" in logs  # the driver's progress, followed live
    from evo.lineage.ledger import Ledger

    rows = Ledger(root).rows()
    assert [r["GEN_ID"] for r in rows] == ["gen-0", "gen-1"]
    trials = read_trials(root)
    assert len(trials) == 2 and rows[1]["trial"] in {t["trial_id"] for t in trials}


def test_pending_trials_make_the_autoscaler_add_nodes_and_idle_ones_go(autoscaled_sweep_job):
    nodes = autoscaled_sweep_job["nodes"]
    assert autoscaled_sweep_job["state"] == "SUCCEEDED"
    assert nodes and max(nodes) == 3, nodes  # head + a node for each of the two concurrent trials
    assert nodes[-1] == 1, nodes  # and the idle nodes were released
