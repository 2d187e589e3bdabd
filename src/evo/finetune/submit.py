"""The server's side of fine-tuning jobs: each is submitted as a Ray job (the Jobs API) running
`evo run-job`; cancel stops that Ray job and takes back what it left; pause asks its training run to
stop at a checkpoint (its Ray job then ends), resume submits a new Ray job that continues from there;
a job whose Ray job ended without its runner saying so, is gone, or never was, is marked failed (at
start-up, every minute, and whenever jobs are read); a paused job has no Ray job by design."""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from evo.atomic import lock_file
from evo.finetune.jobs import TERMINAL, JobStore
from evo.finetune.run_job import RUN_LOCK, runner_alive, set_aside
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

    def submit(self, jid: str, attempts: int = 10, resumes: int = 0) -> str:
        """`evo run-job` for `jid` as a Ray job; its submission id (`evo-<job>`, then `evo-<job>-resume<n>`
        for its n-th resume: Ray never takes an id twice). A head whose job agent is still starting is
        asked again (for up to 20 s)."""
        entry = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "evo.cli", "run-job", "--root", str(self.root), jid))
        sid = f"evo-{jid}" + (f"-resume{resumes}" if resumes else "")
        for attempt in range(attempts):
            try:
                return self.client().submit_job(entrypoint=entry, submission_id=sid,
                                                metadata={"evo_fine_tuning_job": jid})
            except RuntimeError as e:
                if "No available agent" not in str(e) or attempt == attempts - 1:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    def states(self) -> dict[str, tuple[str, str]]:
        """Every submission the cluster knows, {submission id: (status, message)}: one call of its Jobs API."""
        return {d.submission_id: (str(d.status.value), d.message or "")
                for d in self.client().list_jobs() if d.submission_id}

    def state(self, sid: str) -> tuple[str, str]:
        info = self.client().get_job_info(sid)
        return str(info.status.value), info.message or ""

    def stop(self, sid: str) -> None:
        self.client().stop_job(sid)


def wait_for_own_runner(root: Path, jid: str, timeout: float) -> bool:
    """True once job `jid`'s runner is gone (a paused job's, after it wrote its checkpoint)."""
    deadline = time.monotonic() + timeout
    while runner_alive(root, jid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


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
    def __init__(self, root: str | Path, ray_jobs: RayJobs, sweep_every_s: Optional[float] = 60.0,
                 submit_grace_s: float = 120.0):
        """`sweep_every_s`: stale jobs (`settle`) are swept at once, on a thread, then every that many
        seconds (None: only when jobs are read). `submit_grace_s`: how long a job may go without a Ray
        job before it counts as never submitted (`start` retries a starting head for up to 20 s)."""
        self.root, self.store, self.ray = Path(root), JobStore(root), ray_jobs
        self.submit_grace_s = submit_grace_s
        self._lock, self._known, self._stop = threading.Lock(), None, threading.Event()
        if sweep_every_s is not None:
            threading.Thread(target=self._sweeper, args=(sweep_every_s,), daemon=True, name="evo-jobs-sweep").start()

    def close(self) -> None:
        self._stop.set()

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

    def _states(self, fresh: bool = False) -> dict[str, tuple[str, str]]:
        """The cluster's submissions, asked at most once a second (a page of jobs asks once, not per job)."""
        with self._lock:
            if fresh or self._known is None or time.monotonic() - self._known[0] > 1.0:
                self._known = (time.monotonic(), self.ray.states())
            return self._known[1]

    def settle(self, job: dict) -> dict:
        """A job still active whose Ray job ended without the runner recording the end, whose Ray job the
        cluster does not know (gone: Ray restarted), or that never got one (the server stopped between
        creating and submitting it) is marked failed, with an event that says why."""
        if job["status"] in TERMINAL:
            return job
        if job["status"] == "paused" and job.get("paused_step") is not None:  # its Ray job ended, by design
            return job
        # a paused job its runner has not yet recorded stopping (or never will: the pause came after training,
        # and the runner goes on to the end) is alive only while its Ray job is
        sid = job.get("submission_id")
        if not sid:
            age = (time.time_ns() - job.get("resumed_ns", job["created_ns"])) / 1e9  # created, or resumed
            if age < self.submit_grace_s:  # being submitted now
                return job
            return self._fail(job, "never_submitted", f"the job was never submitted as a Ray job ({age:.0f} s after "
                              "it was created: the server stopped between creating and submitting it); create it again")
        try:
            known = self._states()
            if sid not in known:  # asked before this job was submitted? ask again before calling it gone
                known = self._states(fresh=True)
        except Exception:  # the Jobs API is busy or gone: show the job as last recorded
            return job
        if sid not in known:
            return self._fail(job, "ray_job_gone", f"Ray job {sid} is not known to the cluster at {self.ray.address} "
                              "(it was restarted, or is another cluster): the job's runner is gone; create it again")
        state, message = known[sid]
        if state not in RAY_ENDED:
            return job
        return self._fail(job, "ray_job_ended", f"Ray job {sid} ended ({state}) before the fine-tuning job did"
                          f"{': ' + message if message else ''}; `ray job logs {sid}` shows why")

    def _fail(self, job: dict, code: str, message: str) -> dict:
        job = self.store.raw(job["id"])  # the runner may have finished it meanwhile
        if job["status"] in TERMINAL:
            return job
        job = self.store.update(job["id"], status="failed", error={"code": code, "message": message, "param": None})
        if job["status"] == "failed" and (job.get("error") or {}).get("code") == code:
            self.store.event(job["id"], f"failed: {message}", level="error")
        return job

    def sweep(self) -> list[str]:
        """`settle` every active job (one ask of the Jobs API for all); the ids of those it failed."""
        failed = []
        for job in self.store.all():
            if job["status"] not in TERMINAL and self.settle(job)["status"] == "failed":
                failed.append(job["id"])
        return failed

    def _sweeper(self, every_s: float) -> None:
        while True:
            try:
                self.sweep()
            except Exception as e:  # a torn file, a full disk: the next sweep tries again
                print(f"evo: the fine-tuning jobs' sweep failed: {type(e).__name__}: {e}", flush=True)
            if self._stop.wait(every_s):
                return

    def pause(self, jid: str, owner: Optional[str]) -> dict:
        """A running job paused (`JobStore.pause`); its runner records where training stopped."""
        job = self.store.pause(jid, owner)
        self.store.event(jid, "pause requested: training stops after its current step, with a Ray Train checkpoint "
                              "of that step; the job's Ray job then ends, and other jobs take their turns")
        return job

    def resume(self, jid: str, owner: Optional[str]) -> dict:
        """A paused job resumed: once its last runner is gone, a new Ray job runs it (files checked again,
        then its turn in the queue), continuing its generation from the checkpoint it paused at. A 409 while
        that runner is still writing the checkpoint; a 503 when the Ray job cannot be submitted (it stays paused)."""
        job = self.store.raw(jid, owner)
        if job["status"] == "paused" and not wait_for_own_runner(self.root, jid, 30):
            raise APIError(409, f"fine-tuning job {jid} is still pausing: its runner is writing the checkpoint; "
                                "resume it once its events say where it paused", "fine_tuning_job_id", "conflict")
        job = self.store.reopen(jid)  # 409 unless paused
        try:
            sid = self.ray.submit(jid, resumes=job["resumes"])
        except Exception as e:
            # the count stays: a submission that timed out here may have reached Ray, so the next try takes a new id
            self.store.update(jid, status="paused")
            message = (f"resume failed: the Ray job could not be submitted to {self.ray.address}: {e}; the job stays "
                       "paused, resume it again once the cluster's Jobs API answers")
            self.store.event(jid, message, level="error")
            raise APIError(503, message, "fine_tuning_job_id", "ray_unavailable") from None
        at = job.get("paused_step")
        self.store.event(jid, f"resumed as Ray job {sid}: its files are checked again, then in its turn training "
                              + (f"continues from the checkpoint of step {at}" if at else "starts again from step 0"))
        return self.store.update(jid, submission_id=sid)

    def cancel(self, jid: str, owner: Optional[str]) -> dict:
        """Stop the job's Ray job; the generation it trained is withdrawn (`run_job.set_aside`), before its
        verdict or after, so the registry's aliases are as they were before it and its model is never served.
        A paused job has no Ray job: it is cancelled once its last runner is gone (at once, mostly)."""
        job = self.store.raw(jid, owner)
        if job["status"] in TERMINAL:
            raise APIError(409, f"fine-tuning job {jid} has already {job['status']}", "fine_tuning_job_id", "conflict")
        paused = job["status"] == "paused"
        job = self.store.update(jid, status="cancelled")
        self.store.pause_path(jid).unlink(missing_ok=True)
        if job.get("submission_id") and (not paused or runner_alive(self.root, jid)):
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
        # a paused job's runner, if still there, is its own: the run lock may be another job's by now
        if not (wait_for_own_runner(self.root, jid, 60) if paused else wait_for_runner(self.root, 60)):
            self.store.event(jid, "the runner did not stop within 60 s; its generation is withdrawn when it ends",
                             level="warn")
            return job
        set_aside(self.root, self.store, jid, self.store.raw(jid)["evo"].get("gen_id"), f"fine-tuning job {jid} cancelled")
        self.store.event(jid, "cancelled")
        return self.store.raw(jid)
