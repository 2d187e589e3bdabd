"""One fine-tuning job, start to end: what the Ray job `evo run-job --root ROOT JOB_ID` runs.

validating_files: both files are ingested again with evo's rules (a bad line fails the job and names
it). queued: the job waits for its turn (one runs at a time per lineage, taken round robin over tenants,
each tenant's in submission order: `evo.finetune.jobs.fair_order`); a queued or running job whose runner
died is marked failed by the next job that waits (`fail_dead_runners`).
running: one generation of the lineage is trained from the job's model (on a tenant's job, into that
tenant's branch: `job_branch`, `evo.lineage.registry`; it never moves a shared alias) on
the training file (the validation file, when given, is its selection split), evaluated, gated and
recorded like any other: against the champion of the moment its decision is written, which after an
earlier job's promotion is not the model it was trained from (`evo.driver.decide_and_record`);
checkpoint metrics become events as they happen. succeeded: its model is
`ft:<model>:<suffix>:<sha8>`, served at once, champion or not.
failed or cancelled: whatever the run registered is withdrawn (`set_aside`): the job leaves no model,
and the champion and the candidate are what they were before it; the last event names the real end.
paused: the training run stopped after a step with a checkpoint of it (`evo.train.trainer.TrainingPaused`);
the runner records the step and ends, freeing the run lock. Resumed, a new runner takes the job's turn
again and runs the same generation: the same mix, and Ray Train's run of the same name restores its
checkpoints and continues from that step.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from evo.atomic import lock_file, locked, read_json
from evo.config import EvoConfig
from evo.data.ingest import IngestError, ingest_bytes
from evo.finetune.files import FileStore
from evo.finetune.jobs import TERMINAL, JobStore, fair_order, plan_training
from evo.finetune.validation import job_validation
from evo.lineage.decisions import DecisionError, Decisions
from evo.lineage.root import Lineage, gen_id
from evo.openai_api import APIError
from evo.progress import Progress
from evo.ray_waits import Stalled
from evo.train.worker_config import TrainingPaused

ACTIVE = ("validating_files", "queued", "running")


class JobFailed(Exception):
    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.error = {"code": code, "message": message, "param": param}


class JobProgress(Progress):
    """evo's progress lines, printed (the Ray job's log) and kept as the job's events."""

    def __init__(self, store: JobStore, jid: str):
        super().__init__()
        self.store, self.jid = store, jid

    def __call__(self, where: str, message: str) -> None:
        super().__call__(where, message)
        self.store.event(self.jid, f"{where}: {message}")


RUN_LOCK = ("service", "lineage-run")  # under the root; `locked` keeps its lock file in service/.locks/


def run_lock(root: Path):
    """Held by the job that is training; released by the process's death too (a cancelled job)."""
    return locked(Path(root).joinpath(*RUN_LOCK))


def _records(files: FileStore, job: dict, field: str, max_chars: int) -> list:
    fid = job[field]
    try:
        obj = files.get(fid)
        data = files.content(fid)
    except APIError:
        raise JobFailed("invalid_file", f"{field} {fid}: the file is gone (deleted after the job was created)",
                        field) from None
    try:
        report = ingest_bytes(data, obj["filename"], max_chars=max_chars, fix="fix them and upload the file again")
    except IngestError as e:
        raise JobFailed("invalid_file", f"{field} {fid}: {e}", field) from None
    return report.records


def runner_lock(root: Path, jid: str):
    """Held by job `jid`'s runner for as long as its process lives (the OS releases it at its death),
    so a waiting job can tell a queued or running job whose runner is gone from one that is alive."""
    return locked(JobStore(root).dir / f"{jid}.runner")


def runner_alive(root: Path, jid: str) -> bool:
    lock = lock_file(JobStore(root).dir / f"{jid}.runner")
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def fail_dead_runners(store: JobStore, but: str = "") -> list[str]:
    """Marks failed every queued or running job (other than `but`) whose runner died without recording
    its end; their ids. Each runner holds its lock from before it makes its job queued until it has
    recorded the job's end, so a free lock on such a job means its process is gone."""
    dead = []
    for j in store.all():
        if j["id"] == but or j["status"] not in ("queued", "running") or runner_alive(store.root, j["id"]):
            continue
        sid = j.get("submission_id") or "(none)"
        error = {"code": "runner_gone", "message": f"the job's runner (Ray job {sid}) died while the job was "
                 f"{j['status']}, without recording its end (a Ray restart or a killed process); `ray job logs "
                 f"{sid}` shows why where the cluster still has it", "param": None}
        if store.update(j["id"], status="failed", error=error)["status"] == "failed":
            store.event(j["id"], f"failed: {error['message']}", level="error")
            dead.append(j["id"])
    return dead


def _wait_turn(store: JobStore, jid: str, poll_s: float = 1.0) -> None:
    """Until this job is first in the queue's fair order (`evo.finetune.jobs.fair_order`: round robin over
    tenants) and no other job is running, or it has ended (a cancel). Jobs whose runner died are marked
    failed on the way (`fail_dead_runners`), so none holds the queue; one still validating its files
    holds only its own tenant's later jobs."""
    while True:
        fail_dead_runners(store, but=jid)
        jobs = store.all()
        me = next(j for j in jobs if j["id"] == jid)
        if me["status"] in TERMINAL:
            return
        queue = fair_order(jobs)
        running = [j for j in jobs if j["status"] == "running" and j["id"] != jid]
        if not running and queue and queue[0]["id"] == jid:
            return
        time.sleep(poll_s)


def job_branch(job: dict) -> str:
    """Whose branch a job's generation joins (`evo.lineage.registry`): "" the shared line (an admin key's
    job, a keyless server's), else the tenant's key id. A job written before branches were recorded is
    its key's (never the shared line's by default)."""
    return job["branch"] if "branch" in job else job["owner"]


def set_aside(root: Path, store: JobStore, jid: str, gid: Optional[str], why: str) -> None:
    """The model job `jid`'s run registered for generation `gid`, if any, withdrawn through the decisions
    module (`Decisions.withdraw`: before its verdict it leaves the registry; after, it is `withdrawn` and
    the aliases go back to what they were before the job); an event says what was done."""
    if not gid:
        return
    try:
        done = Decisions(root).withdraw(gid, why)
    except DecisionError as e:
        store.event(jid, f"{gid}: its model could not be withdrawn: {e}", level="warn")
        return
    if done is not None:
        store.event(jid, f"{gid}: its model was withdrawn ({why}): never served, no alias; the champion and the "
                         "candidate are as before the job")


def next_index(lin) -> int:
    """The next generation's number: past every generation the ledger, the registry, the decision log,
    a job or a run folder names. A withdrawn generation's number is not given again, nor that of a job
    cancelled before it registered anything: its run folder (checkpoints of a run that never ended)
    must never be taken for the next job's."""
    gens = [r["GEN_ID"] for r in lin.ledger.rows()] + [m["gen_id"] for m in lin.registry.load()["models"].values()]
    gens += [d.gen_id for d in lin.decisions.log()]
    gens += [j.get("evo", {}).get("gen_id") or "" for j in JobStore(lin.root).all()]
    runs = lin.root / "runs"
    gens += [p.name for p in runs.iterdir()] if runs.is_dir() else []
    return 1 + max((int(m.group(1)) for g in gens if (m := re.fullmatch(r"gen-(\d+)", g))), default=0)


def lineage_config(root: Path) -> EvoConfig:
    """The lineage's config: the last `evo run`'s, kept in run_config.json."""
    path = root / "run_config.json"
    if not path.exists():
        raise JobFailed("no_config", f"{path}: the lineage has no run config; run `evo run` or `evo demo` first")
    return EvoConfig.model_validate(read_json(path))


def job_config(cfg: EvoConfig, job: dict, n_records: int) -> tuple[EvoConfig, dict]:
    """The lineage's config with the job's settings."""
    cfg = cfg.model_copy(deep=True)
    plan = plan_training(job["hyperparameters"], cfg.train.lr, cfg.train.steps, cfg.train.batch_size, n_records)
    if plan["steps"] > cfg.jobs.max_steps:
        hp = job["hyperparameters"]
        how = (f"n_epochs {hp['n_epochs']} x {n_records} records / batch {plan['batch_size']}"
               if isinstance(hp.get("n_epochs"), int) else "the lineage's train.steps")
        raise JobFailed("invalid_hyperparameters", f"{how} is {plan['steps']} steps, over this server's limit of "
                        f"{cfg.jobs.max_steps} steps a job (jobs.max_steps): ask for fewer epochs or give steps",
                        "hyperparameters.n_epochs" if isinstance(hp.get("n_epochs"), int) else "hyperparameters")
    cfg.train.steps, cfg.train.lr, cfg.train.batch_size = plan["steps"], plan["lr"], plan["batch_size"]
    cfg.train.method = (job.get("method") or {}).get("type", "supervised")  # OpenAI's method.type
    if "beta" in plan:  # method dpo's beta, as the job gives it
        cfg.train.dpo.beta = plan["beta"]
    cfg.train.seed = job["seed"]
    cfg.train.checkpoint_every = min(cfg.train.checkpoint_every, cfg.train.steps)
    if plan["tune"]:  # "auto": the sweep searches it; the rest stay as asked
        if "learning_rate_multiplier" not in plan["tune"]:
            cfg.tune.lr = (plan["lr"], plan["lr"])
        if not {"n_epochs", "steps"} & set(plan["tune"]):
            cfg.tune.steps = [plan["steps"]]
        if "beta" not in plan["tune"]:
            cfg.tune.beta = [cfg.train.dpo.beta]
    return cfg, plan


def cluster_cpus() -> Optional[dict]:
    """What the connected cluster can ever give a job: {"total": its CPUs, "serve": those Serve's actors
    hold for good, "autoscaled": an autoscaler reports to it (so it can add nodes)}; None without Ray."""
    import ray

    if not ray.is_initialized():
        return None
    total = float(ray.cluster_resources().get("CPU", 0.0))
    serve = 0.0
    try:
        from ray.util.state import list_actors

        for a in list_actors(filters=[("state", "=", "ALIVE")], limit=2000, raise_on_missing_output=False):
            if a.ray_namespace == "serve":
                serve += float((a.required_resources or {}).get("CPU", 0.0))
    except Exception:  # no dashboard (ray minimal): Serve's share unknown, counted as none
        pass
    autoscaled = False
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        autoscaled = bool(get_cluster_status(ray.get_runtime_context().gcs_address).stats.autoscaler_version)
    except Exception:
        pass
    return {"total": total, "serve": serve, "autoscaled": autoscaled}


def fit_workers(cfg: EvoConfig, cpus: Optional[dict]) -> Optional[str]:
    """Fits cfg.train.num_workers to what the cluster can ever give (`cluster_cpus`), down to
    jobs.min_workers; what it changed, said for the job's events (None: nothing). A cluster that cannot
    give even that fails the job at once, the message naming both numbers. An autoscaled cluster, GPU
    workers or an unknown cluster are left as asked (the Ray waits' watchdog reports what stays pending)."""
    t = cfg.train
    if cpus is None or cpus["autoscaled"] or t.use_gpu:
        return None
    need, can = t.num_workers * t.cpus_per_worker, cpus["total"] - cpus["serve"]
    if need <= can + 1e-9:
        return None
    fit = int((can + 1e-9) // t.cpus_per_worker)
    where = (f"the cluster can give {can:g} CPUs ({cpus['total']:g} in all, {cpus['serve']:g} held by Serve's "
             "replicas, no autoscaler)")
    if fit < cfg.jobs.min_workers:
        raise JobFailed("insufficient_resources", f"the job needs {need:g} CPUs ({t.num_workers} Ray Train workers x "
                        f"{t.cpus_per_worker:g} CPU) and {where}; even jobs.min_workers ({cfg.jobs.min_workers}) "
                        f"needs {cfg.jobs.min_workers * t.cpus_per_worker:g}: start Ray with more CPUs, or lower "
                        "train.cpus_per_worker")
    asked, t.num_workers = t.num_workers, fit
    return (f"fitted to the cluster: {fit} Ray Train worker(s) of {t.cpus_per_worker:g} CPU instead of {asked} "
            f"({need:g} CPUs asked, {where})")


class MetricsTail(threading.Thread):
    """Turns the training worker's checkpoint metrics (one JSON line each) into events and checkpoints.

    In a sweep every trial writes there, its label naming it: each of its reports is a message event,
    and only the winner's become the job's metrics events and checkpoints (`publish`), so the job's
    loss curve is one run's."""

    def __init__(self, store: JobStore, jid: str, path: Path, name: str):
        super().__init__(daemon=True)
        self.store, self.jid, self.path, self.name = store, jid, path, name
        self.done, self.seen = threading.Event(), 0
        self.trials: dict[str, list[dict]] = {}

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.drain()
        self.drain()

    def drain(self) -> None:
        import json

        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for line in lines[self.seen:]:
            if not line.endswith("}"):
                break  # being written
            m = json.loads(line)
            self.seen += 1
            trial = str(m.get("label", "")).partition("/")[2]
            if not trial:
                self._metrics(m)
                continue
            self.trials.setdefault(trial, []).append(m)
            self.store.event(self.jid, f"trial {trial}: step {m['step']}/{m['steps']}: training loss={m['train_loss']:.4f}, "
                                       f"validation loss={m['val_loss']:.4f}", data={**_point(m), "trial": trial},
                             kind="message")

    def publish(self, trial: str) -> None:
        """The sweep's winner: its reports become the job's metrics and checkpoints."""
        for m in self.trials.get(trial, []):
            self._metrics(m, f" (trial {trial}, the sweep's winner)")

    def _metrics(self, m: dict, note: str = "") -> None:
        data = _point(m)
        self.store.event(self.jid, f"Step {m['step']}/{m['steps']}: training loss={m['train_loss']:.4f}, "
                                   f"validation loss={m['val_loss']:.4f}{note}", data=data)
        self.store.add_checkpoint(self.jid, m["step"], {k: data[k] for k in ("step", "train_loss", "valid_loss")},
                                  f"{self.name}:ckpt-step-{m['step']}")


def checkpoint_models(lin: Lineage, gid: str, job: dict, name: str) -> dict[str, str]:
    """The checkpoints the run kept (`evo.train.trainer.keep_last`: the last jobs.keep_checkpoints),
    stored as models beside the job's (adapters on its parent, in models/, never in the registry:
    a checkpoint is served under its job's model, `evo.inference.gateway`); {checkpoint name: sha}.
    Their copies in the run folder go once stored."""
    folder, kept = lin.run_dir(gid) / "checkpoints", {}
    steps = sorted(int(p.name.removeprefix("step-")) for p in folder.glob("step-*")) if folder.is_dir() else []
    for step in steps:
        meta = {"gen_id": gid, "checkpoint_step": step, "fine_tuning_job": job["id"]}
        kept[f"{name}:ckpt-step-{step}"] = lin.models.put_adapter(folder / f"step-{step}", job["parent_sha"], meta)
    if folder.is_dir():
        shutil.rmtree(folder)
    return kept


def _point(m: dict) -> dict:
    return {"step": m["step"], "total_steps": m["steps"], "train_loss": m["train_loss"], "valid_loss": m["val_loss"]}


def execute(root: str | Path, jid: str, run_generation: Callable) -> int:
    """Run job `jid` to its end; the exit status of the Ray job (0 also for a job cancelled meanwhile).

    `run_generation` is `evo.driver.run_generation`, given by the driver's `evo run-job` (this room never
    imports the driver): the job is one generation, its child built as every child is (`evo.train.child.build_child`)."""

    root = Path(root)
    store, files = JobStore(root), FileStore(root)
    with runner_lock(root, jid):  # held until the job's end is recorded: others can tell this runner lives
        return _execute(root, store, files, jid, run_generation)


def _execute(root: Path, store: JobStore, files: FileStore, jid: str, run_generation: Callable) -> int:
    job = store.raw(jid)
    if job["status"] in TERMINAL:
        return 0
    gid = None
    try:
        base_cfg = lineage_config(root)
        train = _records(files, job, "training_file", base_cfg.data.max_chars)
        own_val = _records(files, job, "validation_file", base_cfg.data.max_chars) if job["validation_file"] else None
        if own_val is not None:  # apart from the training file and every test part, by content (evo.finetune.validation)
            own_val = job_validation(root, base_cfg, train, own_val, lambda message: store.event(jid, message))
        job_config(base_cfg, job, len(train))  # its steps within jobs.max_steps, or it fails here
        if store.update(jid, status="queued")["status"] != "queued":
            return 0  # cancelled meanwhile
        store.event(jid, f"files validated: {len(train)} training records"
                         + (f", {len(own_val)} validation records" if own_val is not None else "") + "; queued")
        _wait_turn(store, jid)
        if store.raw(jid)["status"] in TERMINAL:  # cancelled while it waited: no lock to wait for
            return 0
        with run_lock(root):
            if store.raw(jid)["status"] in TERMINAL:  # cancelled while it waited
                return 0
            lin = Lineage(root, owner=job_branch(job))  # a tenant's job grows that tenant's branch
            lin.decisions.reconcile()
            cfg, plan = job_config(base_cfg, job, len(train))
            fitted = fit_workers(cfg, cluster_cpus())  # before it is running: one that cannot fit fails at once
            gid = job["evo"].get("gen_id") or gen_id(next_index(lin))  # a resumed job: its own generation again
            index = int(gid.removeprefix("gen-"))
            if store.update(jid, status="running", evo={**job["evo"], "gen_id": gid})["status"] != "running":
                return 0  # cancelled just now
            progress = JobProgress(store, jid)
            if fitted:
                progress(gid, fitted)
            if job.get("paused_step") is not None:
                progress(gid, f"resuming after the pause at step {job['paused_step']}: Ray Train restores the run's "
                              "checkpoints and continues from the last")
            progress(gid, f"training {plan['steps']} steps at lr {plan['lr']:.3g}, batch {plan['batch_size']}"
                          + (f"; Ray Tune searches {', '.join(plan['tune'])}" if plan["tune"] else ""))
            metrics = lin.run_dir(gid) / "metrics.jsonl"
            metrics.unlink(missing_ok=True)
            name = f"ft:{job['model']}:{job['suffix'] or 'evo'}"
            tail = MetricsTail(store, jid, metrics, f"{name}:{jid}")
            tail.start()
            try:
                row = run_generation(cfg, lin, index, str(files.path(job["training_file"], job["owner"] or None)),
                                     progress, extra={"metrics_path": str(metrics),
                                                      "keep_checkpoints": 0 if plan["tune"] else cfg.jobs.keep_checkpoints,
                                                      # a sweep is never paused (JobStore.pause refuses it)
                                                      "pause_file": "" if plan["tune"] else str(store.pause_path(jid))},
                                     tune=bool(plan["tune"]),
                                     parent=job["parent_sha"], own_val=own_val)
            finally:
                tail.done.set()
                tail.join(10)
            if row.get("trial"):
                tail.publish(row["trial"])
            sha = row["child_sha"]
            meta = lin.models.meta(sha)
            result = files.put_result(store.metrics_csv(jid), "step_metrics.csv", job["owner"])
            kept = checkpoint_models(lin, gid, job, f"{name}:{jid}")
            done = store.update(jid, status="succeeded", fine_tuned_model=f"{name}:{sha[:8]}",
                                trained_tokens=meta.get("tokens"), result_files=[result["id"]],
                                evo={"gen_id": gid, "sha": sha, "decision": row["decision"], "reason": row["reason"],
                                     "checkpoints": kept})
            if done["status"] != "succeeded":  # cancelled after the gate's verdict: its model goes too
                files.delete(result["id"])
                set_aside(root, store, jid, gid, f"fine-tuning job {jid} {done['status']} after the gate's verdict")
                store.event(jid, done["status"])
                return 0
            branch = ("; on this key's branch: served to it (and admin) only, the shared champion unchanged"
                      if lin.owner else "")
            store.event(jid, f"succeeded: {name}:{sha[:8]} ({gid}, {row['decision']} by the gate: {row['reason']}{branch})")
            return 0
    except TrainingPaused as e:
        return _paused(store, jid, e)
    except JobFailed as e:
        return _failed(root, store, jid, gid, e.error)
    except Exception as e:  # the run's own error, named; what it registered is withdrawn
        code = "stalled" if isinstance(e, Stalled) else "training_failed"  # Ray could not place its work
        return _failed(root, store, jid, gid, {"code": code, "message": f"{type(e).__name__}: {e}", "param": None})


def _paused(store: JobStore, jid: str, e: TrainingPaused) -> int:
    """The training run stopped at the pause: where is recorded (the status stays paused, or becomes it
    if the pause file was written but not yet the status); a job cancelled meanwhile stays cancelled."""
    job = store.update(jid, status="paused", paused_step=e.step)
    if job["status"] == "paused":
        store.event(jid, f"paused at step {e.step} of {e.steps}: the Ray Train checkpoint of step {e.step} is kept, "
                         "and resume continues from it; the queue goes on meanwhile")
    return 0


def _failed(root: Path, store: JobStore, jid: str, gid: Optional[str], error: dict) -> int:
    """The job failed: its generation's model, if it registered one, is withdrawn, then the job is marked
    failed (a job cancelled meanwhile stays cancelled); the last event says which."""
    set_aside(root, store, jid, gid, f"fine-tuning job {jid} failed: {error['message']}")
    job = store.update(jid, status="failed", error=error)
    if job["status"] == "failed":
        store.event(jid, f"failed: {error['message']}", level="error")
    else:
        store.event(jid, job["status"])
    return 1
