"""Reading an MLflow view back with `MlflowClient` (tests of evo.tracking), and a real `mlflow server`
on 127.0.0.1 with a SQLite backend that a test can stop and start again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def client(target: dict):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=target["uri"], registry_uri=target["uri"])


def dump(target: dict) -> dict:
    """Everything of the view that evo sends, keyed by generation (and trial), without MLflow's ids and
    times: runs (params, evo tags, status, metric histories as sorted lists, so a point sent twice
    shows), their parent, artifacts, logged models, registered versions and aliases."""
    c = client(target)
    exp = c.get_experiment_by_name(target["experiment"])
    assert exp is not None, f"no experiment {target['experiment']!r} at {target['uri']}"
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    key_of = {r.info.run_id: (r.data.tags["evo.gen_id"], r.data.tags.get("evo.trial_id", "")) for r in runs}
    out: dict = {"runs": {}, "models": {}, "versions": {}, "aliases": {}}
    for r in runs:
        rid = r.info.run_id
        out["runs"][key_of[rid]] = {
            "name": r.info.run_name, "status": r.info.status, "params": dict(r.data.params),
            "tags": {k: v for k, v in r.data.tags.items() if k.startswith("evo.")},
            "parent": key_of.get(r.data.tags.get("mlflow.parentRunId", ""), None),
            "metrics": {k: sorted((m.step, m.value) for m in c.get_metric_history(rid, k)) for k in r.data.metrics},
            "artifacts": sorted(f.path for f in c.list_artifacts(rid)),
        }
    for m in c.search_logged_models([exp.experiment_id]):
        out["models"].setdefault(m.name, []).append((m.tags.get("evo.sha"), key_of[m.source_run_id], str(m.status)))
    name = target["model_name"]
    for v in c.search_model_versions(f"name = '{name}'"):
        out["versions"][int(v.version)] = (v.tags.get("evo.sha"), v.tags.get("evo.gen_id"), key_of[v.run_id],
                                           v.tags.get("evo.status"), v.tags.get("evo.decision"))
    out["aliases"] = {a: int(v) for a, v in c.get_registered_model(name).aliases.items()}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 (its own process group, so stop() ends its workers too), SQLite backend."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, wait_s: float = 180) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=open(self.folder / "server.log", "ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not answer on {self.uri} within {wait_s:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
