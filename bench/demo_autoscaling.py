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

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
REPO = Path(__file__).parents[1]
RAY = str(Path(sys.executable).parent / "ray")
GCS_PORT, DASH_PORT = 16491, 18491
SETTINGS = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2", "model.tiny.intermediate_size=128",
    "model.tiny.vocab_size=320", "model.max_length=48", "model.pretrain.steps=60", "train.batch_size=8",
    "train.checkpoint_every=10", "train.num_workers=2", "tune.num_workers=2", "tune.cpus_per_worker=1",
    "tune.num_samples=2", "tune.max_concurrent=2", "tune.steps=[40]", "tune.scheduler=none",
    "eval.max_items=24", "eval.max_new_tokens=12",
]


def fake_cluster_config() -> dict:
    def none():
        return []

    return {
        "cluster_name": "evo-autoscaling-demo", "max_workers": 2, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,  # 6 s, so the release shows within the demo
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{GCS_PORT}"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        "initialization_commands": none(), "setup_commands": none(), "head_setup_commands": none(),
        "worker_setup_commands": none(), "head_start_ray_commands": none(), "worker_start_ray_commands": none(),
        "cluster_synced_files": none(), "file_mounts_sync_continuously": False, "rsync_exclude": none(),
        "rsync_filter": none(),
    }


def alive_nodes(token: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{DASH_PORT}/api/v0/nodes?limit=100",
                                 headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = json.loads(r.read())
    rows = body["data"]["result"]["result"]
    return sum(1 for n in rows if n.get("state") == "ALIVE")


def stop_own_processes(head: subprocess.Popen, marker: str) -> None:
    """Signal the head's process group, then anything else that joined this cluster's GCS."""
    import psutil

    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for p in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in (p.info["cmdline"] or [])) and p.pid != os.getpid():
            try:
                p.kill()
            except psutil.Error:
                pass


def main() -> None:
    from evo.data.demo import write_demo_data
    from report import update_section

    work = Path(tempfile.mkdtemp(prefix="evo-autoscale-"))
    demo = write_demo_data(work / "data", generations=1)
    cfg_path = work / "fake-cluster.json"
    cfg_path.write_text(json.dumps(fake_cluster_config()))
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_FAKE_CLUSTER": "1",
           "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_ADDRESS": f"127.0.0.1:{GCS_PORT}"}
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={GCS_PORT}", f"--dashboard-port={DASH_PORT}",
         "--ray-client-server-port=10491", "--min-worker-port=21000", "--max-worker-port=21499", "--num-cpus=1",
         f"--autoscaling-config={cfg_path}",
         f"--temp-dir=/tmp/evo-as-{os.getpid()}", "--include-dashboard=true", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env["RAY_ADDRESS"] = f"http://127.0.0.1:{DASH_PORT}"
    timeline: list[tuple[float, int, str]] = []
    try:
        deadline = time.time() + 120
        while True:
            try:
                alive_nodes(token)
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("the Ray head did not come up in 120 s")
                time.sleep(2)
        sets = [a for s in SETTINGS for a in ("--set", s)]
        subprocess.run([RAY, "job", "submit", "--no-wait", "--submission-id", "evo-autoscale", "--", sys.executable,
                        str(REPO / "jobs" / "sweep.py"), str(demo), "--root", str(work / "lineage"), *sets],
                       env=env, check=True, capture_output=True, timeout=120)
        t0, state, done_at = time.time(), "RUNNING", None
        while time.time() - t0 < 900:
            if state not in ("SUCCEEDED", "FAILED", "STOPPED"):
                out = subprocess.run([RAY, "job", "status", "evo-autoscale"], env=env, capture_output=True,
                                     text=True, timeout=60)
                text = (out.stdout + out.stderr).lower()
                state = next((w.upper() for w in ("succeeded", "failed", "stopped", "running", "pending")
                              if w in text), state)
                if state in ("SUCCEEDED", "FAILED", "STOPPED"):
                    done_at = time.time() - t0
            n = alive_nodes(token)
            timeline.append((time.time() - t0, n, state))
            print(f"{timeline[-1][0]:6.1f}s  nodes alive: {n}  job: {state}", flush=True)
            if done_at is not None and n == 1:
                break
            time.sleep(2)
        logs = subprocess.run([RAY, "job", "logs", "evo-autoscale"], env=env, capture_output=True, text=True,
                              timeout=60).stdout
    finally:
        stop_own_processes(head, f":{GCS_PORT}")
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
