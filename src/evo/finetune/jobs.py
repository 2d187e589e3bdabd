"""Fine-tuning jobs (`/v1/fine_tuning/jobs`), kept in the lineage root.

A job is one audited generation of the lineage: its training file is the generation's delta, its
`model` the parent, and the gate, the ledger and the decision log treat it like any other
generation. The job object, its events and its checkpoints live in `service/jobs/`
(`<id>.json`, `<id>.events.jsonl`, `<id>.checkpoints.json`, and `<id>.pause` while it is paused), so a
server restarted mid-job shows the job and, once the Ray job that runs it (`evo.finetune.run_job`) ends,
its final state; a paused job stays paused.

Statuses, as OpenAI's, with `paused` between running and its resume: validating_files -> queued ->
running -> succeeded | failed | cancelled; running -> paused (`JobStore.pause`: the training run stops
after its current step with a Ray Train checkpoint, and the job's Ray job ends, so the queue goes on) ->
validating_files (`JobStore.reopen`, the resume: a new Ray job, which checks the files again and, in
its turn, continues the same generation from that checkpoint) or cancelled. `moves` is the one rule.

Hyperparameters, in OpenAI's terms: `learning_rate_multiplier` multiplies the lineage config's
`train.lr` (it is not an absolute rate), `n_epochs` is passes over the training file (steps are
epochs x records / batch), `steps` (evo's) sets the steps directly, `batch_size` the global batch;
"auto" for a multiplier or a length searches it with Ray Tune, the sweep's winner chosen on the
validation file when there is one.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from evo.atomic import atomic_write_json, locked, read_json
from evo.config import JobsConfig
from evo.data.ingest import IngestError, ingest_bytes
from evo.finetune.validation import check_validation_file
from evo.openai_api import APIError, new_id, page
from evo.train.method import METHODS, method_problem

JOB_ID = re.compile(r"ftjob-[A-Za-z0-9]+")  # what new_id("ftjob") makes: no dot, no slash
STATUSES = ("validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
# where a paused job may go: resumed (its new runner checks its files again), cancelled, or ended by the
# runner that was still finishing it (a pause that came after its training had ended, or its failure)
FROM_PAUSED = ("validating_files", "cancelled", "succeeded", "failed")
SUFFIX = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
# owner: the key that made the job (its files, events, checkpoints); branch: whose branch of the lineage its
# generation joins ("" the shared line: an admin key or a keyless server; else the key's, evo.lineage.registry)
INTERNAL = ("owner", "branch", "created_ns", "started_ns", "submission_id", "parent_sha", "resumes", "resumed_ns",
            "paused_step")
MIN_EPOCHS, MAX_EPOCHS = 1, 50  # OpenAI's bounds on n_epochs
# the fields of POST /v1/fine_tuning/jobs (OpenAI's, each in docs/service.md's field table); another is a 400
JOB_FIELDS = ("model", "training_file", "validation_file", "hyperparameters", "method", "suffix", "seed", "metadata",
              "integrations")


def _bad(message: str, param: str) -> APIError:
    return APIError(400, message, param)


def _training_data(files, fid: str, owner: Optional[str], param: str) -> None:
    """File `fid` of `owner`'s (404 otherwise), uploaded as training data (a job's results file: 400)."""
    if files.get(fid, owner)["purpose"] != "fine-tune":
        raise _bad(f"{fid} is a job's results file (purpose fine-tune-results), not training data", param)


def parse_hyperparameters(raw: Any, where: str = "hyperparameters", beta: bool = False) -> dict:
    """{n_epochs | steps, batch_size, learning_rate_multiplier, and with `beta` (method dpo) beta}: each a
    positive value or "auto"; omitted ones are the lineage config's. `where`: the field they came in
    (the errors' param)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object", where)
    known = {"n_epochs", "steps", "batch_size", "learning_rate_multiplier"} | ({"beta"} if beta else set())
    unknown = set(raw) - known
    if unknown:
        raise _bad(f"unknown hyperparameters {sorted(unknown)}: evo takes n_epochs or steps, batch_size and "
                   "learning_rate_multiplier" + (", and beta" if beta else " (beta only with method dpo)"), where)
    if raw.get("n_epochs") is not None and raw.get("steps") is not None:
        raise _bad("give n_epochs or steps, not both", f"{where}.steps")
    out = {}
    for name, kind in (("n_epochs", int), ("steps", int), ("batch_size", int), ("learning_rate_multiplier", float),
                       ("beta", float)):
        v = raw.get(name)
        if v is None:
            continue
        if v == "auto" and name == "batch_size":  # OpenAI's default: here the lineage config's batch (not searched)
            continue
        if v == "auto":
            out[name] = "auto"
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and (kind is float or float(v).is_integer())
        if not ok:
            what = "a positive number" if kind is float else "a positive whole number"
            raise _bad(f"{where}.{name} must be {what} or \"auto\", not {v!r}", f"{where}.{name}")
        if name == "n_epochs" and not MIN_EPOCHS <= v <= MAX_EPOCHS:
            raise _bad(f"{where}.n_epochs must be from {MIN_EPOCHS} to {MAX_EPOCHS} (as OpenAI's) or \"auto\", "
                       f"not {v!r}", f"{where}.n_epochs")
        out[name] = kind(v)
    return out


def parse_method(raw: Any, top: Any) -> tuple[str, dict]:
    """(method type, its hyperparameters) from OpenAI's `method` ({"type": "supervised" | "dpo", and under
    the type's name {"hyperparameters": {...}}; dpo's may hold beta}) and the older top-level
    `hyperparameters` (`top`), which a job may give instead. No `method`: supervised."""
    if raw is None:
        return "supervised", parse_hyperparameters(top)
    if not isinstance(raw, dict):
        raise _bad("method must be an object: {\"type\": \"supervised\" or \"dpo\", ...}", "method")
    kind = raw.get("type")
    if kind not in METHODS:
        raise _bad(f"method.type must be one of {', '.join(repr(m) for m in METHODS)}, not {kind!r}", "method.type")
    other = set(raw) - {"type", kind}
    if other:
        raise _bad(f"method {kind!r} takes only its own settings (method.{kind}), not {sorted(other)}",
                   f"method.{sorted(other)[0]}")
    section = raw.get(kind)
    if section is not None and (not isinstance(section, dict) or set(section) - {"hyperparameters"}):
        raise _bad(f"method.{kind} must be an object with only 'hyperparameters'", f"method.{kind}")
    hp = parse_hyperparameters((section or {}).get("hyperparameters"), f"method.{kind}.hyperparameters", kind == "dpo")
    if hp and top:
        raise _bad(f"give the hyperparameters in method.{kind}.hyperparameters only, not also at the top level",
                   "hyperparameters")
    return kind, hp or parse_hyperparameters(top)


def check_file_method(files, fid: str, field: str, method: str, max_chars: int = 100_000) -> None:
    """A 400 naming the file when its records do not fit the method: a dpo job needs preference
    records, a supervised job takes none (`evo.train.method.method_problem`)."""
    try:
        records = ingest_bytes(files.content(fid), fid, max_chars=max_chars).records
    except IngestError as e:
        raise _bad(f"{field} {fid}: {e}", field) from None
    if problem := method_problem(method, records, f"{field} {fid}"):
        raise _bad(problem, field)


def moves(current: str, new: str) -> bool:
    """Whether a job in status `current` may be written with status `new`: a final status is kept, a
    paused job leaves it only for FROM_PAUSED (never back to queued or running by a runner that had not
    seen the pause), and every other move is the runner's or the service's to make."""
    if new == current:
        return True
    if current in TERMINAL:
        return False
    return current != "paused" or new in FROM_PAUSED


def searched(job: dict) -> list[str]:
    """The hyperparameters Ray Tune searches for the job ("auto")."""
    return sorted(k for k, v in (job.get("hyperparameters") or {}).items() if v == "auto")


def fair_order(jobs: list[dict]) -> list[dict]:
    """The queue (jobs `queued`) in the order they are taken: round robin over tenants (owners), each
    tenant's jobs in submission order, the tenant served least recently first (the one whose latest job
    started longest ago, or never). So one tenant's long queue never delays another tenant's first job:
    after each of its jobs, every other tenant waiting takes a turn. A tenant's job still validating its
    files holds that tenant's later jobs (submission order does not depend on which file validates
    first), never another tenant's; one that never gets a runner is failed by the service's sweep. A
    paused job is not in the queue and holds nobody; resumed, it validates its files again and takes its
    turn as a job submitted when it was first created."""
    last: dict[Any, int] = {}
    for j in jobs:
        if j.get("started_ns"):
            last[j["owner"]] = max(last.get(j["owner"], 0), j["started_ns"])
    mine: dict[Any, list[dict]] = {}
    validating: set = set()  # tenants with an earlier job still validating its files: their later jobs wait
    for j in sorted(jobs, key=lambda j: j["created_ns"]):
        if j["status"] == "validating_files":
            validating.add(j["owner"])
        elif j["status"] == "queued" and j["owner"] not in validating:
            mine.setdefault(j["owner"], []).append(j)
    keyed = [((k, last.get(owner, 0), own[0]["created_ns"]), j) for owner, own in mine.items() for k, j in enumerate(own)]
    return [j for _, j in sorted(keyed, key=lambda x: x[0])]


def plan_training(hp: dict, base_lr: float, base_steps: int, base_batch: int, n_records: int) -> dict:
    """What the generation trains with: {lr, steps, batch_size, tune: [searched names]} (and beta, for
    method dpo, where the job gives one)."""
    batch = hp.get("batch_size", base_batch)
    mult = hp.get("learning_rate_multiplier", 1.0)
    tune = [n for n in ("learning_rate_multiplier", "n_epochs", "steps", "beta") if hp.get(n) == "auto"]
    if isinstance(hp.get("steps"), int):
        steps = hp["steps"]
    elif isinstance(hp.get("n_epochs"), int):
        steps = max(1, math.ceil(hp["n_epochs"] * n_records / batch))
    else:
        steps = base_steps
    plan = {"lr": base_lr * (mult if mult != "auto" else 1.0), "steps": steps, "batch_size": batch, "tune": tune}
    if isinstance(hp.get("beta"), float):
        plan["beta"] = hp["beta"]
    return plan


class JobStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dir = self.root / "service" / "jobs"

    def _path(self, jid: str, ext: str = "json") -> Path:
        if not JOB_ID.fullmatch(jid):  # never a side file (`ftjob-x.checkpoints`) nor a path
            raise APIError(404, f"no fine-tuning job {jid!r}", "fine_tuning_job_id", "not_found_error")
        return self.dir / f"{jid}.{ext}"

    def create(self, body: Any, owner: str, file_owner: Optional[str], files, resolve: Callable[[str], tuple[str, str]]) -> dict:
        """Check a job request and keep it (status validating_files); `resolve` maps the request's
        model to (its name, the parent's sha) or raises a 404."""
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        unknown = [k for k in body if k not in JOB_FIELDS]
        if unknown:
            raise _bad(f"Unrecognized request argument supplied: {unknown[0]} (evo does not support it)", unknown[0])
        if body.get("integrations"):  # OpenAI's Weights & Biases hook; [] or null is taken
            raise _bad("integrations: evo sends a job to no integration (its runs are in the lineage's MLflow view, "
                       "evo tracking); give [] or leave it out", "integrations")
        for name in ("model", "training_file"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise _bad(f"'{name}' is required", name)
        model_name, parent = resolve(body["model"])
        _training_data(files, body["training_file"], file_owner, "training_file")  # 404 when it is not this key's
        if body.get("validation_file") is not None:
            if not isinstance(body["validation_file"], str):
                raise _bad("'validation_file' must be a file id", "validation_file")
            _training_data(files, body["validation_file"], file_owner, "validation_file")
            if body["validation_file"] == body["training_file"]:
                raise _bad("the validation file must differ from the training file: it chooses the checkpoint",
                           "validation_file")
            check_validation_file(files, body["training_file"], body["validation_file"], file_owner)  # by content
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or not SUFFIX.fullmatch(suffix)):
            raise _bad("suffix: 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit", "suffix")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise _bad("seed must be a whole number >= 0", "seed")
        method, hp = parse_method(body.get("method"), body.get("hyperparameters"))
        for field in ("training_file", "validation_file"):
            if body.get(field) is not None:
                check_file_method(files, body[field], field, method)
        cap = self.max_steps()
        if isinstance(hp.get("steps"), int) and hp["steps"] > cap:
            raise _bad(f"hyperparameters.steps: {hp['steps']} is over this server's limit of {cap} steps a job "
                       "(the lineage config's jobs.max_steps)", "hyperparameters.steps")
        jid = new_id("ftjob")
        job = {"id": jid, "object": "fine_tuning.job", "created_at": int(time.time()), "finished_at": None,
               "error": None, "fine_tuned_model": None, "hyperparameters": hp, "model": model_name,
               "organization_id": "evo", "result_files": [], "seed": seed if seed is not None else 0,
               "status": "validating_files", "trained_tokens": None, "training_file": body["training_file"],
               "validation_file": body.get("validation_file"), "estimated_finish": None, "integrations": [],
               "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else None,
               "method": {"type": method, method: {"hyperparameters": hp}},
               "suffix": suffix, "evo": {"gen_id": None, "sha": None, "decision": None, "reason": None},
               "owner": owner, "branch": file_owner or "", "created_ns": time.time_ns(), "submission_id": None,
               "parent_sha": parent}
        atomic_write_json(self._path(jid), job)
        self.event(jid, f"job created: {model_name} on {body['training_file']}")
        return job

    def max_steps(self) -> int:
        """The lineage config's jobs.max_steps (its default where the root has no run config yet)."""
        path = self.root / "run_config.json"
        cfg = read_json(path) if path.exists() else {}
        return JobsConfig.model_validate(cfg.get("jobs") or {}).max_steps

    def raw(self, jid: str, owner: Optional[str] = None) -> dict:
        path = self._path(jid)
        if not path.exists():
            raise APIError(404, f"no fine-tuning job {jid!r}", "fine_tuning_job_id", "not_found_error")
        job = read_json(path)
        if owner is not None and job["owner"] != owner:
            raise APIError(404, f"no fine-tuning job {jid!r}", "fine_tuning_job_id", "not_found_error")
        return job

    def get(self, jid: str, owner: Optional[str] = None) -> dict:
        return public(self.raw(jid, owner))

    def all(self) -> list[dict]:
        """Every job, oldest first (submission order)."""
        paths = [p for p in self.dir.glob("ftjob-*.json") if p.name.count(".") == 1] if self.dir.exists() else []
        jobs = [read_json(p) for p in paths]  # not <id>.checkpoints.json
        return sorted(jobs, key=lambda j: j["created_ns"])

    def list(self, owner: Optional[str] = None, after: Optional[str] = None, limit: int = 20,
             metadata: Optional[dict[str, str]] = None) -> dict:
        """Newest first, `owner`'s (None: every one). `metadata`: OpenAI's filter (`metadata[k]=v` in the
        query): only jobs whose metadata has every pair; an empty dict (`metadata=null`): jobs without any."""
        jobs = [j for j in reversed(self.all()) if owner is None or j["owner"] == owner]
        if metadata is not None:
            jobs = [j for j in jobs if (all((j.get("metadata") or {}).get(k) == v for k, v in metadata.items())
                                        if metadata else not j.get("metadata"))]
        return page([public(j) for j in jobs], after, limit)

    def update(self, jid: str, **fields) -> dict:
        """Change a job's fields, unless it changes the status in a way `moves` refuses (a job that reached
        a final status keeps it; a paused one is not made queued or running): then the job as it is."""
        with locked(self._path(jid)):
            job = read_json(self._path(jid))
            if not moves(job["status"], fields.get("status", job["status"])):
                return job
            if fields.get("status") == "running" and job["status"] != "running":
                job["started_ns"] = time.time_ns()  # its tenant's latest turn (`fair_order`)
            job.update(fields)
            if fields.get("status") in TERMINAL:
                job["finished_at"] = int(time.time())
                self.pause_path(jid).unlink(missing_ok=True)  # a pause that came too late, or a cancel's
            atomic_write_json(self._path(jid), job)
        return job

    def pause_path(self, jid: str) -> Path:
        """The file whose appearance pauses the job's training run (`WorkerConfig.pause_file`)."""
        return self._path(jid, "pause")

    def pause(self, jid: str, owner: Optional[str] = None) -> dict:
        """A running job becomes paused: the pause file is written (its training run stops after the step
        in progress, with a checkpoint of that step), then the status. 409 for a job in another status,
        naming it; 400 for a job whose hyperparameters Ray Tune searches."""
        self.raw(jid, owner)  # 404 when it is not the caller's
        with locked(self._path(jid)):
            job = read_json(self._path(jid))
            if job["status"] != "running":
                raise APIError(409, f"fine-tuning job {jid} cannot be paused: it is {job['status']}, and only a "
                                    "running job can be", "fine_tuning_job_id", "conflict")
            if searched(job):
                raise APIError(400, f"fine-tuning job {jid} cannot be paused: Ray Tune searches its "
                                    f"{', '.join(searched(job))} (\"auto\"), and evo does not pause a sweep; cancel it, "
                                    "or create the job with those hyperparameters given", "fine_tuning_job_id")
            atomic_write_json(self.pause_path(jid), {"paused_at": int(time.time())})
            job["status"], job["paused_step"] = "paused", None  # set by the runner once training has stopped
            atomic_write_json(self._path(jid), job)
        return job

    def reopen(self, jid: str) -> dict:
        """A paused job, resumed: its pause file goes, and it is validating_files again with no Ray job
        yet (`resumed_ns` starts the service's grace for submitting one)."""
        with locked(self._path(jid)):
            job = read_json(self._path(jid))
            if job["status"] != "paused":
                raise APIError(409, f"fine-tuning job {jid} cannot be resumed: it is {job['status']}, and only a "
                                    "paused job can be", "fine_tuning_job_id", "conflict")
            self.pause_path(jid).unlink(missing_ok=True)
            job.update(status="validating_files", submission_id=None, resumes=job.get("resumes", 0) + 1,
                       resumed_ns=time.time_ns())
            atomic_write_json(self._path(jid), job)
        return job

    def event(self, jid: str, message: str, level: str = "info", data: Optional[dict] = None,
              kind: Optional[str] = None) -> None:
        """`kind`: "metrics" (the job's loss curve) where `data` is given, else "message", unless named."""
        ev = {"id": new_id("ftevent"), "object": "fine_tuning.job.event", "created_at": int(time.time()),
              "level": level, "message": message, "type": kind or ("metrics" if data else "message"), "data": data or {}}
        with locked(self._path(jid, "events.jsonl")), open(self._path(jid, "events.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(ev) + "\n")
            f.flush()

    def events(self, jid: str, owner: Optional[str] = None, after: Optional[str] = None, limit: int = 20) -> dict:
        """Newest first, as OpenAI lists them."""
        self.raw(jid, owner)
        path = self._path(jid, "events.jsonl")
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        evs = [json.loads(x) for x in lines if x.strip().endswith("}")]  # a torn last line is skipped
        return page(list(reversed(evs)), after, limit)

    def add_checkpoint(self, jid: str, step: int, metrics: dict, name: str) -> None:
        path = self._path(jid, "checkpoints.json")
        with locked(path):
            rows = read_json(path) if path.exists() else []
            if any(r["step_number"] == step for r in rows):
                return
            rows.append({"object": "fine_tuning.job.checkpoint", "id": new_id("ftckpt"), "created_at": int(time.time()),
                         "fine_tuned_model_checkpoint": name, "fine_tuning_job_id": jid, "metrics": metrics,
                         "step_number": step})
            atomic_write_json(path, rows)

    def metrics_csv(self, jid: str) -> bytes:
        """The job's loss curve as its result file: one row per checkpoint (step, train_loss, valid_loss),
        in step order, as OpenAI's step_metrics.csv lists its steps."""
        path = self._path(jid, "checkpoints.json")
        rows = sorted(read_json(path) if path.exists() else [], key=lambda r: r["step_number"])
        lines = ["step,train_loss,valid_loss"] + [
            f"{r['step_number']},{r['metrics'].get('train_loss', '')},{r['metrics'].get('valid_loss', '')}" for r in rows]
        return ("\n".join(lines) + "\n").encode()

    def checkpoints(self, jid: str, owner: Optional[str] = None, after: Optional[str] = None, limit: int = 10) -> dict:
        self.raw(jid, owner)
        path = self._path(jid, "checkpoints.json")
        rows = read_json(path) if path.exists() else []
        return page(sorted(rows, key=lambda r: -r["step_number"]), after, limit)


def public(job: dict) -> dict:
    return {k: v for k, v in job.items() if k not in INTERNAL}
