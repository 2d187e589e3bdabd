"""A Ray head of its own on this machine: `ray start --head --block` on chosen ports, token auth
with a fresh token, optionally Ray's fake multi-node autoscaler; stopped without `ray stop` (which
would kill every Ray process on the machine): the head's process group is signalled, then any
process still attached to this head's GCS port is killed."""

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
from typing import Optional

from evo.testing.clusters import START_WAIT_S, start_patiently

RAY = str(Path(sys.executable).parent / "ray")


def fake_autoscaling_config(gcs_port: int, head_cpus: int, worker_cpus: int, max_workers: int,
                            idle_timeout_minutes: float) -> dict:
    """Ray's fake multi-node provider: "nodes" are raylets on this machine, launched and terminated by
    the real autoscaler as it would cloud instances."""
    empty: list = []
    return {
        "cluster_name": "evo-local", "max_workers": max_workers, "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": worker_cpus}, "node_config": {}, "min_workers": 0,
                           "max_workers": max_workers},
        },
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        "initialization_commands": empty, "setup_commands": empty, "head_setup_commands": empty,
        "worker_setup_commands": empty, "head_start_ray_commands": empty, "worker_start_ray_commands": empty,
        "cluster_synced_files": empty, "file_mounts_sync_continuously": False, "rsync_exclude": empty,
        "rsync_filter": empty,
    }


class JobsAPI:
    """The Jobs API of a cluster's dashboard (`url`), asked with the cluster's auth token."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self._client = None

    def client(self):
        from ray.job_submission import JobSubmissionClient

        if self._client is None:
            self._client = JobSubmissionClient(self.url, headers={"Authorization": f"Bearer {self.token}"})
        return self._client

    def job_state(self, submission_id: str, attempts: int = 5) -> str:
        """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED); a call that fails or hangs
        on a busy machine is tried again before giving up."""
        for attempt in range(attempts):
            try:
                return str(self.client().get_job_status(submission_id).value)
            except Exception:  # a dashboard too busy to answer in time: the SDK raises its own errors
                if attempt == attempts - 1:
                    raise
                self._client = None
                time.sleep(2)
        raise AssertionError("unreachable")


class LocalHead:
    def __init__(self, base_port: int, num_cpus: int, autoscaling: Optional[dict] = None, token: Optional[str] = None,
                 env: Optional[dict] = None):
        """`token`: the head's auth token (default: a fresh one). A process that will itself connect
        to the head (`ray.init(address=...)`) must pass the token it already uses: Ray reads a
        process's token once (`evo.testing.clusters.use_private_token`). `env`: variables for every
        process of the cluster (the head's, its jobs', the nodes the autoscaler adds)."""
        self.gcs_port, self.dashboard_port = base_port, base_port + 2000
        self.num_cpus, self.autoscaling = num_cpus, autoscaling
        self.token = token or secrets.token_hex(16)
        self.proc: Optional[subprocess.Popen] = None
        self._jobs_api = JobsAPI(f"http://127.0.0.1:{self.dashboard_port}", self.token)
        # For `ray job ...` and the state API: the Jobs API address and this head's token.
        self.env = {**os.environ, **(env or {}), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    "RAY_ADDRESS": f"http://127.0.0.1:{self.dashboard_port}"}

    def start(self, timeout: float = 180) -> LocalHead:
        """Start the head and wait (up to `timeout`) until its dashboard answers; a head that was too
        slow is stopped and started once more (see evo.testing.clusters)."""
        return start_patiently(lambda: self._start(timeout), f"the Ray head on port {self.gcs_port}", self.stop)

    def _start(self, timeout: float) -> LocalHead:
        p = self.gcs_port
        cmd = [RAY, "start", "--head", "--block", f"--port={p}", f"--dashboard-port={self.dashboard_port}",
               f"--ray-client-server-port={p + 1}", f"--node-manager-port={p + 2}", f"--object-manager-port={p + 3}",
               f"--dashboard-agent-listen-port={self.dashboard_port + 1}", f"--metrics-export-port={self.dashboard_port + 2}",
               f"--min-worker-port={p + 4}", f"--max-worker-port={p + 400}", f"--num-cpus={self.num_cpus}",
               f"--temp-dir=/tmp/evo-head-{p}", "--include-dashboard=true", "--disable-usage-stats"]
        env = {**self.env, "RAY_ADDRESS": f"127.0.0.1:{p}"}
        env.setdefault("RAY_gcs_server_port_wait_time_s", str(START_WAIT_S))
        if self.autoscaling is not None:
            fd, path = tempfile.mkstemp(prefix="evo-autoscaling-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(self.autoscaling, f)
            cmd.append(f"--autoscaling-config={path}")
            env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.alive_nodes()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ray start failed: {self.proc.stderr.read()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Ray head did not come up within {timeout:.0f} s") from None
                time.sleep(1)

    def nodes(self) -> list[dict]:
        """The cluster's nodes (node_id, state, is_head_node, ...), from the dashboard's state API."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.dashboard_port}/api/v0/nodes?limit=100",
                                     headers={"authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())["data"]["result"]["result"]

    def alive_nodes(self) -> int:
        """Nodes alive, from the dashboard's state API."""
        return sum(1 for n in self.nodes() if n.get("state") == "ALIVE")

    def job(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`ray job ARGS` against this head, through the CLI as a user would type it."""
        return subprocess.run([RAY, "job", *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def jobs(self):
        """A Jobs API client for this head (one HTTP call per question, no CLI process spawned)."""
        return self._jobs_api.client()

    def job_state(self, submission_id: str, attempts: int = 5) -> str:
        """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) through the Jobs API."""
        return self._jobs_api.job_state(submission_id, attempts)

    def stop(self) -> None:
        import psutil

        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)  # `ray start --block` stops its own processes; what is left is killed below
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        marker = f":{self.gcs_port}"
        for p in psutil.process_iter(["cmdline"]):
            cmdline = p.info["cmdline"] or []
            if p.pid != os.getpid() and any(marker in part or f"evo-head-{self.gcs_port}" in part for part in cmdline):
                try:
                    p.kill()
                except psutil.Error:
                    pass

    def __enter__(self) -> LocalHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
