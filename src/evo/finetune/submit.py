"""The server's side of fine-tuning jobs: each is submitted as a Ray job (the Jobs API) running
`evo run-job`; cancel stops that Ray job and takes back what it left; a Ray job that ended without
its runner saying so marks the job failed."""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

from evo.atomic import lock_file
from evo.finetune.jobs import TERMINAL, JobStore
from evo.finetune.run_job import RUN_LOCK
from evo.lineage.decisions import DecisionError, Decisions
from evo.openai_api import APIError

RAY_ENDED = ("FAILED", "STOPPED", "SUCCEEDED")


def _ray_token() -> Optional[str]:
    """The cluster's auth token where Ray itself looks: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH
    names, or ~/.ray/auth_token (what `ray start` writes with token auth on, the default since 2.59)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if path and Path(path).is_file():
            return Path(path).read_text().strip() or None
    return None


class RayJobs:
    def __init__(self, root: str | Path, address: Optional[str] = None, headers: Optional[dict] = None):
        self.root = Path(root)
        env = os.environ.get("RAY_ADDRESS", "")
        self.address = address or (env if env.startswith("http") else "http://127.0.0.1:8265")
        token = _ray_token()
        self.headers = headers if headers is not None else ({"Authorization": f"Bearer {token}"} if token else {})
        self._client = None

    def client(self):
        from ray.job_submission import JobSubmissionClient

        if self._client is None:
            self._client = JobSubmissionClient(self.address, headers=self.headers)
        return self._client

    def submit(self, jid: str, attempts: int = 10) -> str:
        """`evo run-job` for `jid` as a Ray job; its submission id. A head whose job agent is still
        starting is asked again (for up to 20 s)."""
        entry = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "evo.cli", "run-job", "--root", str(self.root), jid))
        for attempt in range(attempts):
            try:
                return self.client().submit_job(entrypoint=entry, submission_id=f"evo-{jid}",
                                                metadata={"evo_fine_tuning_job": jid})
            except RuntimeError as e:
                if "No available agent" not in str(e) or attempt == attempts - 1:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    def state(self, sid: str) -> tuple[str, str]:
        info = self.client().get_job_info(sid)
        return str(info.status.value), info.message or ""

    def stop(self, sid: str) -> None:
        self.client().stop_job(sid)


def wait_for_runner(root: Path, timeout: float) -> bool:
    """True once no runner holds the lineage's run lock (a stopped one releases it as it dies)."""

    lock = lock_file(Path(root).joinpath(*RUN_LOCK))  # the file run_lock holds
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
    finally:
        os.close(fd)


class JobService:
    def __init__(self, root: str | Path, ray_jobs: RayJobs):
        self.root, self.store, self.ray = Path(root), JobStore(root), ray_jobs

    def start(self, job: dict) -> dict:
        try:
            sid = self.ray.submit(job["id"])
        except Exception as e:
            job = self.store.update(job["id"], status="failed", error={
                "code": "submit_failed", "message": f"the Ray job could not be submitted to {self.ray.address}: {e}. "
                "Fine-tuning jobs need a Ray cluster with its Jobs API: `ray start --head`, then "
                "`evo serve --address auto`", "param": None})
            self.store.event(job["id"], f"failed: {job['error']['message']}", level="error")
            return job
        self.store.event(job["id"], f"submitted as Ray job {sid}")
        return self.store.update(job["id"], submission_id=sid)

    def settle(self, job: dict) -> dict:
        """A job whose Ray job ended without the runner recording the end is marked failed."""
        if job["status"] in TERMINAL or not job.get("submission_id"):
            return job
        try:
            state, message = self.ray.state(job["submission_id"])
        except Exception:  # the Jobs API is busy or gone: show the job as last recorded
            return job
        if state not in RAY_ENDED:
            return job
        job = self.store.raw(job["id"])  # the runner may have finished it meanwhile
        if job["status"] in TERMINAL:
            return job
        error = {"code": "ray_job_ended", "message": f"Ray job {job['submission_id']} ended ({state}) before the "
                 f"fine-tuning job did{': ' + message if message else ''}; `ray job logs {job['submission_id']}` "
                 "shows why", "param": None}
        self.store.event(job["id"], f"failed: {error['message']}", level="error")
        return self.store.update(job["id"], status="failed", error=error)

    def cancel(self, jid: str, owner: Optional[str]) -> dict:
        """Stop the job's Ray job; a generation it trained but did not record is withdrawn, so the
        ledger and the registry's aliases and models are as they were before it."""
        job = self.store.raw(jid, owner)
        if job["status"] in TERMINAL:
            raise APIError(409, f"fine-tuning job {jid} has already {job['status']}", "fine_tuning_job_id", "conflict")
        job = self.store.update(jid, status="cancelled")
        if job.get("submission_id"):
            try:
                self.ray.stop(job["submission_id"])
            except Exception as e:  # already gone: nothing to stop
                self.store.event(jid, f"stopping Ray job {job['submission_id']}: {e}", level="warn")
        if not job["evo"].get("gen_id"):
            # Cancelled before its runner took its turn (the runner names its generation in the same
            # update that makes it running, which a cancelled job refuses): it trains and records
            # nothing, so there is no runner of its own to wait for (the run lock may be another job's).
            self.store.event(jid, "cancelled")
            return self.store.raw(jid)
        if not wait_for_runner(self.root, 60):
            self.store.event(jid, "the runner did not stop within 60 s; its generation is withdrawn when it ends",
                             level="warn")
            return job
        gid = self.store.raw(jid)["evo"].get("gen_id")
        if gid:
            try:
                if Decisions(self.root).withdraw(gid, f"fine-tuning job {jid} cancelled") is not None:
                    self.store.event(jid, f"{gid}: its trained model was withdrawn (never a candidate again)")
            except DecisionError as e:
                self.store.event(jid, f"{gid}: the gate's verdict was recorded before the cancel took effect ({e})",
                                 level="warn")
        self.store.event(jid, "cancelled")
        return self.store.raw(jid)
