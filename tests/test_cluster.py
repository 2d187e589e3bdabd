"""evo on real multi-process Ray clusters on this machine: a sweep spread over two nodes, and a
sweep submitted as a Ray job through the Jobs API to a head started with `ray start`.

Each test starts its own cluster on non-default ports and stops only the processes it started
(never `ray stop`, which would kill every Ray process on the machine)."""

from __future__ import annotations

import csv
import os
import secrets
import signal
import subprocess
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
def ray_head(tmp_path):
    """A Ray head started with `ray start --block` on non-default ports, token auth on (a fresh
    token of its own), in its own process group; stopped by signalling that group only."""
    temp = Path(f"/tmp/evo-rj-{os.getpid()}")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_ADDRESS": "127.0.0.1:16391"}
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port=16391",
           "--dashboard-port=18391", "--ray-client-server-port=10391", "--node-manager-port=16392",
           "--object-manager-port=16393", "--dashboard-agent-listen-port=18392", "--metrics-export-port=18393",
           "--min-worker-port=17100", "--max-worker-port=17400", "--num-cpus=3", f"--temp-dir={temp}",
           "--include-dashboard=true", "--disable-usage-stats"]
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    env["RAY_ADDRESS"] = "http://127.0.0.1:18391"  # the Jobs API, for the job client below
    deadline = time.time() + 120
    while time.time() < deadline:
        probe = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "list"], env=env,
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            break
        assert head.poll() is None, head.stderr.read()[-2000:]
        time.sleep(2)
    else:
        pytest.fail("the Ray head did not come up within 120 s")
    yield env
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(30)


def test_a_sweep_job_through_the_jobs_api(ray_head, demo_dir, tmp_path):
    root = tmp_path / "lineage"
    sets = [a for s in TINY + SWEEP + ["tune.num_workers=1", "tune.cpus_per_worker=0.5"] for a in ("--set", s)]
    entry = ([sys.executable, str(REPO / "jobs" / "sweep.py"), str(demo_dir / "demo.yaml"),
                      "--root", str(root), *sets])
    ray = str(Path(sys.executable).parent / "ray")
    t0 = time.time()
    # Submitted through the Jobs API; the CLI follows the job's logs until it ends.
    job = subprocess.run([ray, "job", "submit", "--submission-id", "evo-sweep-test", "--", *entry],
                         env=ray_head, capture_output=True, text=True, timeout=600)
    logs = job.stdout + job.stderr
    status = subprocess.run([ray, "job", "status", "evo-sweep-test"], env=ray_head, capture_output=True, text=True,
                            timeout=60)
    assert job.returncode == 0 and "succeeded" in (status.stdout + status.stderr).lower(), (job.returncode, status.stdout,
                                                                                   status.stderr, logs[-1500:])
    assert "winner: trial" in logs and "gen-1" in logs  # the driver's progress, followed live
    from evo.lineage.ledger import Ledger

    rows = Ledger(root).rows()
    assert [r["GEN_ID"] for r in rows] == ["gen-0", "gen-1"]
    trials = read_trials(root)
    assert len(trials) == 2 and rows[1]["trial"] in {t["trial_id"] for t in trials}
    assert time.time() - t0 < 600
