"""One generation's search with Ray Tune: each trial is a Ray Train run of the same training loop.

Tune runs `_trial` in an actor of its own: it builds a `TorchTrainer` for the trial's settings and
fits it on a thread. A Ray Train callback in Train's controller (`_forwarder`) sends each checkpoint's
metrics through a Ray queue to the trial, which reports them to Tune with a small Tune checkpoint
that points at the Train checkpoint; so ASHA can stop a poor trial on validation loss while it
runs, and PBT can start a trial from another's weights. After the sweep, the best checkpoints of the
trials with the lowest validation loss are scored by the gate's own evals, and the best of them
becomes the child (proposed as candidate; the driver records the verdict).

Everything a sweep leaves is in the lineage root:
    runs/tune/<name>-<gen>/        Tune's experiment (restored, not redone, after an interruption)
    runs/ray/<name>-<gen>-<trial>/ each trial's Ray Train run and checkpoints
    runs/<gen>/trials/<trial>/     the copied best checkpoint of each evaluated trial
    trials/<gen>.csv               one row per trial: config, metrics, status, checkpoint, why stopped
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ray.tune.stopper import Stopper

from evo.atomic import atomic_write_json, atomic_write_text
from evo.config import EvoConfig
from evo.evals.lineage_evals import evaluate_many, scores_of
from evo.gate import gate
from evo.numbers import cell
from evo.progress import Progress
from evo.ray_waits import Watchdog, cleaned_up
from evo.storage import after_write, refresh, resolve, uri_of
from evo.train.trainer import build_trainer, controller_polling
from evo.train.worker_config import WorkerConfig

TRIAL_COLUMNS = [
    "trial_id", "lr", "steps", "replay_k", "node", "status", "why_stopped", "iterations", "best_step", "best_val_loss",
    "last_train_loss", "checkpoint", "child_sha", "eval_generalization", "eval_recall", "eval_style_drift",
    "gate", "chosen", "seconds", "train_seconds", "started",
    "beta", "best_val_pref_accuracy",  # train.method dpo: the trial's beta, its best checkpoint's val preference accuracy
]


@dataclass
class TrialRecord:
    trial_id: str
    config: dict
    status: str  # completed, stopped early, error
    why_stopped: str
    iterations: int = 0
    best: Optional[dict] = None  # the reported metrics of the checkpoint with the lowest val loss
    curve: list = field(default_factory=list)  # [(step, val_loss, train_loss)]
    seconds: float = 0.0
    child_sha: str = ""
    scores: Optional[dict] = None
    gate: str = ""
    chosen: bool = False
    node: str = ""  # the Ray node id where the trial's rank-0 worker ran
    train_seconds: float = 0.0  # of `seconds`, the time in training steps and checkpoints
    started_at: float = 0.0  # epoch seconds

    def row(self) -> dict:
        b, s = self.best or {}, self.scores or {}
        return {
            "trial_id": self.trial_id, "lr": f"{self.config.get('lr', float('nan')):.4g}",
            "steps": self.config.get("steps"), "replay_k": self.config.get("replay_k"), "node": self.node,
            "status": self.status,
            "why_stopped": self.why_stopped, "iterations": self.iterations, "best_step": b.get("step", ""),
            "best_val_loss": cell(b.get("val_loss")), "last_train_loss": cell(self.curve[-1][2] if self.curve else None),
            "checkpoint": b.get("checkpoint_path", ""), "child_sha": self.child_sha,
            "eval_generalization": cell(s.get("generalization")), "eval_recall": cell(s.get("recall")),
            "eval_style_drift": "" if s.get("style_drift") is None else s["style_drift"], "gate": self.gate,
            "chosen": "yes" if self.chosen else "", "seconds": f"{self.seconds:.1f}",
            "train_seconds": f"{self.train_seconds:.1f}", "started": f"{self.started_at:.1f}",
            "beta": cell(self.config.get("beta")), "best_val_pref_accuracy": cell(b.get("val_pref_accuracy")),
        }


def write_trials_csv(path: Path, records: list[TrialRecord]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TRIAL_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(r.row() for r in records)
    atomic_write_text(path, buf.getvalue())


def param_space(cfg: EvoConfig) -> dict:
    from ray import tune

    t = cfg.tune
    space = {"lr": tune.loguniform(*t.lr), "steps": tune.choice(list(t.steps)),
             "replay_k": tune.choice(list(t.replay_k))}
    if cfg.train.method == "dpo":  # DPO's beta, searched beside them
        space["beta"] = tune.choice(list(t.beta))
    return space


def scheduler(cfg: EvoConfig):
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    t, every = cfg.tune, cfg.train.checkpoint_every
    if t.scheduler == "asha":  # time is counted in checkpoints (one Tune result per checkpoint)
        return ASHAScheduler(time_attr="training_iteration", metric="val_loss", mode="min",
                             max_t=math.ceil(max(t.steps) / every), grace_period=t.grace_period,
                             reduction_factor=t.reduction_factor)
    if t.scheduler == "pbt":
        from ray import tune

        return PopulationBasedTraining(
            time_attr="training_iteration", metric="val_loss", mode="min",
            perturbation_interval=t.perturbation_interval,
            hyperparam_mutations={"lr": tune.loguniform(*t.lr), "replay_k": list(t.replay_k),
                                  **({"beta": list(t.beta)} if cfg.train.method == "dpo" else {})},
            synch=t.pbt_synch, log_config=False)
    return None


POINTER = "train_checkpoint.txt"  # a Tune checkpoint holds only the path of the Train checkpoint
CONTROLLER = "__controller__"  # a report-queue message carrying the Train run's controller actor
SCHEMES = {"s3": "s3", "gcs": "gs", "hdfs": "hdfs"}  # pyarrow filesystem type -> URI scheme


def checkpoint_uri(checkpoint) -> str:
    """Where a Train checkpoint is, for any node: its path, with the scheme of a remote filesystem
    (Ray hands back the bare path within the bucket)."""
    scheme = SCHEMES.get(getattr(checkpoint.filesystem, "type_name", "local"))
    return f"{scheme}://{checkpoint.path}" if scheme and "://" not in checkpoint.path else checkpoint.path


def report_log(static: dict, trial_id: str) -> Path:
    """A trial's report log, in this node's view of the lineage root (a URI root: its mirror,
    fetched so a restored trial appends to what it wrote before)."""
    path = resolve(static["root"]) / static["reports_rel"] / f"{trial_id}.jsonl"
    refresh(path)
    return path


def _forwarder(queue):
    """A Ray Train callback (it runs in Train's controller) that sends each report to the trial."""
    from ray.train.v2.api.callback import UserCallback

    class ForwardReports(UserCallback):
        sent_controller = False

        def after_report(self, run_context, metrics, checkpoint):
            if not self.sent_controller:  # so the trial can abort this run if Tune stops it
                import ray

                queue.put((CONTROLLER, ray.get_runtime_context().current_actor))
                self.sent_controller = True
            queue.put((dict(metrics[0]), checkpoint_uri(checkpoint) if checkpoint else None))

    return ForwardReports()


_REPORTS = None  # the report queue of this trial process, kept for the next trial (tune.reuse_actors)


def _report_queue():
    """The queue Train's callback sends reports through: one actor per trial process, reused by
    later trials in the same process (an actor start is a second of a trial's fixed cost)."""
    from ray.util.queue import Queue

    global _REPORTS
    try:
        if _REPORTS is not None:
            while not _REPORTS.empty():  # nothing of an earlier trial is left in it
                _REPORTS.get_nowait()
            return _REPORTS
    except Exception:  # the actor is gone: make another
        pass
    _REPORTS = Queue(actor_options={"num_cpus": 0})
    return _REPORTS


def _trial(config: dict) -> None:
    """One trial, run by Tune in its own actor: a Ray Train run with this trial's settings.

    Train runs on a thread; every checkpoint it reports reaches Tune here, with a small Tune
    checkpoint that points at the Train checkpoint. So ASHA can stop the trial, PBT can start
    another trial from its weights, and a restored sweep continues an unfinished trial from its
    last checkpoint instead of from scratch."""
    import logging
    import queue as _queue
    import tempfile
    import threading

    from ray import tune
    from ray.util.queue import Empty

    logging.getLogger("ray").setLevel(logging.WARNING)  # not a line per checkpoint; evo prints its own
    static = config["evo"]
    trial_id = tune.get_context().get_trial_id()
    worker = static["worker"].replace(lr=config["lr"], steps=config["steps"], label=f"{static['gid']}/{trial_id}",
                                      mix_path=static["mix_paths"][str(config["replay_k"])],
                                      **({"beta": float(config["beta"])} if "beta" in config else {}))
    start = tune.get_checkpoint()
    run_name = f"{static['run_name']}-{trial_id}"
    if start is not None:  # a fresh Train run that starts from that checkpoint (Train would otherwise
        with start.as_directory() as d:  # resume the trial's old run from its own latest one)
            pointer = (Path(d) / POINTER).read_text().strip()
        worker = worker.replace(init_checkpoint=pointer)
        run_name += "-from-" + hashlib.sha256(pointer.encode()).hexdigest()[:8]
    t_start = time.time()

    log_path = report_log(static, trial_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    reports = _report_queue()
    trainer = build_trainer(worker, static["train_cfg"], static["storage"], run_name,
                            callbacks=[_forwarder(reports)])
    failure: list[BaseException] = []

    def fit():
        try:
            with controller_polling(static["train_cfg"]):  # this trial's own process
                trainer.fit()
        except BaseException as e:  # re-raised in the trial, so Tune records the error
            failure.append(e)

    runner = threading.Thread(target=fit, name="evo-trial-fit", daemon=True)
    runner.start()
    controller = None
    try:
        while True:
            try:
                metrics, path = reports.get(timeout=0.5)
            except (Empty, _queue.Empty):
                if runner.is_alive():
                    continue
                if reports.empty():
                    break
                continue
            if metrics == CONTROLLER:
                controller = path
                continue
            metrics.update(checkpoint_path=path or "", trial_started=t_start, reported_at=time.time(), run=run_name)
            with open(log_path, "a", encoding="utf-8") as log:  # the trial's own record of every report
                log.write(json.dumps(metrics) + "\n")
            after_write(log_path)  # a URI root: uploaded whole
            if path is None:
                tune.report(metrics)
                continue
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / POINTER).write_text(path)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
    finally:
        if runner.is_alive():  # left early (Tune stopped the trial): end the Train run, free its resources
            _abort(controller)
            runner.join(timeout=60)
    runner.join()
    if failure:
        raise failure[0]


def _abort(controller) -> None:
    """Abort a Train run through its controller: workers stopped, placement group removed. Without
    this, a trial that ASHA stops would leave its run training on, holding its CPUs or GPUs."""
    import ray

    if controller is None:
        return
    try:
        ray.get(controller.abort.remote(), timeout=60)
    except Exception:  # the controller exits as it aborts; that is the expected end of the call
        pass


_STALLED: set[str] = set()  # the experiments of this process that the watchdog stopped


class StopWhenStalled(Stopper):
    """A Tune Stopper (Tune pickles it with the experiment: a plain class of this module) that ends
    the whole experiment once the watchdog names it in `_STALLED`: trials stopped, state saved, and
    `Tuner.restore` continues it, as after Ctrl-C."""

    def __init__(self, experiment: str):
        self.experiment = experiment

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.experiment in _STALLED


def _reports_size(folder: Path):
    """The sweep's progress: the bytes of every trial's report log (a line per checkpoint)."""
    return sum(p.stat().st_size for p in folder.glob("*.jsonl")) if folder.exists() else 0


def run_sweep(cfg: EvoConfig, lin, gid: str, parent: str, mixes: dict[int, tuple[str, int]], val_path: str,
              worker: WorkerConfig, progress: Progress) -> list[TrialRecord]:
    """Run (or resume) the sweep; one TrialRecord per trial, best checkpoint located."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    t = cfg.tune
    train = cfg.train.model_copy(update={
        "num_workers": t.num_workers or cfg.train.num_workers,
        "cpus_per_worker": t.cpus_per_worker or cfg.train.cpus_per_worker, "max_failures": t.max_failures})

    static = {"gid": gid, "train_cfg": train, "worker": worker, "storage": lin.ray_storage(),
              "run_name": f"{cfg.name}-{gid}", "mix_paths": {str(k): uri_of(p) for k, (p, _) in mixes.items()},
              "root": lin.location, "reports_rel": f"runs/{gid}/trial_reports"}
    space = {**param_space(cfg), "evo": static}
    exp_name = f"{cfg.name}-{gid}"
    tune_storage = uri_of(lin.root / "runs" / "tune")  # a URI root: Tune writes its state there
    exp_dir = f"{tune_storage}/{exp_name}"
    trainable = tune.with_resources(_trial, {"cpu": t.driver_cpus})
    _STALLED.discard(exp_name)
    dog = Watchdog(f"the sweep's trials ({t.max_concurrent} at a time, each {t.driver_cpus:g} CPU for its driver and "
                   f"{train.num_workers} worker(s) of {train.cpus_per_worker:g} CPU)", cfg.ray,
                   lambda message: progress(gid, message), progress=lambda: _reports_size(lin.run_dir(gid) / "trial_reports"),
                   on_stall=lambda: _STALLED.add(exp_name))
    if tune.Tuner.can_restore(exp_dir):
        progress(gid, f"resuming the sweep in {exp_dir} (finished trials are kept)")
        tuner = tune.Tuner.restore(exp_dir, trainable, resume_errored=False)
        # a restored Tuner keeps its saved RunConfig; the stopper of this process is added to it
        tuner._local_tuner._run_config.stop = StopWhenStalled(exp_name)
    else:
        progress(gid, f"sweep: {t.num_samples} trials, {t.max_concurrent} at a time, scheduler {t.scheduler}; "
                 f"lr {t.lr[0]:g}..{t.lr[1]:g} (log), steps {t.steps}, replay k {t.replay_k}")
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(num_samples=t.num_samples, reuse_actors=t.reuse_actors,
                                        search_alg=BasicVariantGenerator(random_state=t.seed, max_concurrent=t.max_concurrent),
                                        scheduler=scheduler(cfg), trial_dirname_creator=lambda tr: tr.trial_id,
                                        **({} if t.scheduler != "none" else {"metric": "val_loss", "mode": "min"})),
            run_config=tune.RunConfig(name=exp_name, storage_path=tune_storage, verbose=0, stop=StopWhenStalled(exp_name),
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
    t0, started = time.perf_counter(), time.time()
    with cleaned_up(lambda message: progress(gid, message)), dog:
        grid = tuner.fit()
    dog.check()  # stopped as stalled: Tune saved its state, and the same command resumes the sweep
    records = [_record(r, lin.run_dir(gid) / "trial_reports", t.scheduler) for r in grid]
    atomic_write_json(lin.run_dir(gid) / "sweep_timing.json", {"started_at": started, "seconds": time.perf_counter() - t0})
    progress(gid, f"sweep done in {time.perf_counter() - t0:.0f}s: "
             + ", ".join(f"{s} {sum(r.status == s for r in records)}" for s in ("completed", "stopped early", "error")))
    return sorted(records, key=lambda r: r.trial_id)


def read_reports(path: Path) -> list[dict]:
    """A trial's reports, in order (the last line may be cut short by a crash: skipped)."""
    refresh(path)  # a URI root: the trial wrote it on its own node
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _record(result, reports_dir: Path, scheduler: str = "asha") -> TrialRecord:
    """A trial as evo reports it, from Tune's result (config, error) and the trial's own report log
    (every checkpoint, across PBT restarts and restores, which Tune's per-result frame can lose)."""
    config = {k: v for k, v in (result.config or {}).items() if k != "evo"}
    trial_id = Path(result.path).name
    rows = read_reports(reports_dir / f"{trial_id}.jsonl")
    curve = [(int(r["step"]), float(r["val_loss"]), float(r.get("train_loss", float("nan")))) for r in rows]
    finite = [r for r in rows if r.get("checkpoint_path") and math.isfinite(r["val_loss"])]
    best = min(finite, key=_checkpoint_rank) if finite else None
    seconds = rows[-1]["reported_at"] - rows[0]["trial_started"] if rows else 0.0
    extra = {"node": str(rows[-1].get("node_id", "")) if rows else ""}
    if rows:
        extra["train_seconds"] = float(rows[-1].get("step_seconds", 0.0)) + float(rows[-1].get("checkpoint_seconds", 0.0))
        extra["started_at"] = float(rows[0]["trial_started"])
    if result.error is not None:
        msg = str(result.error).strip().splitlines()
        why = next((line for line in reversed(msg) if "Error" in line or "error" in line), msg[-1] if msg else "")
        return TrialRecord(trial_id, config, "error", f"error: {why.strip()[:300]}", len(rows), best, curve, seconds,
                           **extra)
    if scheduler == "pbt":  # PBT never stops a trial early: it moves it onto a better one's checkpoint
        clones = len({r["run"] for r in rows if r.get("run")}) - 1
        why = "ran to the end" + (f", continuing from other trials' checkpoints {clones} time(s)" if clones > 0 else "")
        return TrialRecord(trial_id, config, "completed", why, len(rows), best, curve, seconds, **extra)
    if config.get("steps") and rows and int(rows[-1]["step"]) < int(config["steps"]):
        return TrialRecord(trial_id, config, "stopped early",
                           f"stopped by the scheduler at step {int(rows[-1]['step'])} of {config['steps']} "
                           f"(val loss {rows[-1]['val_loss']:.3f})", len(rows), best, curve, seconds, **extra)
    return TrialRecord(trial_id, config, "completed", "ran all its steps", len(rows), best, curve, seconds, **extra)


def _checkpoint_rank(report: dict) -> tuple:
    """A trial's checkpoints, best first: by val preference accuracy where it has one (train.method dpo:
    the share of val pairs whose chosen answer the child's implicit reward ranks first), then val loss."""
    acc = report.get("val_pref_accuracy")
    return (-acc if isinstance(acc, (int, float)) and math.isfinite(acc) else 0.0, report["val_loss"])


def choose_winner(cfg: EvoConfig, lin, gid: str, parent: str, records: list[TrialRecord], data_sha: str,
                  spec, progress: Progress) -> TrialRecord:
    """Score the best checkpoints of the `evaluate_top` trials with the lowest val loss with the gate's
    evals on `spec`, the selection spec (val parts, and the val probes `eval.val_probes`: never the
    reported probes, `evo.evals.lineage_evals.eval_spec`); the winner passes the gate if any does, then
    has the best generalization + recall."""
    from ray.train import Checkpoint

    # Not at the top: Tune's trial actors import this module for `_trial`, and the evals bring in
    # transformers and peft, which a trial's own process never uses.

    pool = sorted((r for r in records if r.best is not None), key=lambda r: _checkpoint_rank(r.best))
    top = pool[: cfg.tune.evaluate_top]
    if not top:
        raise SweepFailed(f"{gid}: no trial of the sweep left a checkpoint; see {trials_path(lin, gid)}")
    for r in top:
        dest = lin.run_dir(gid) / "trials" / r.trial_id / "best"
        if dest.exists():
            shutil.rmtree(dest)
        Checkpoint(r.best["checkpoint_path"]).to_directory(str(dest))
        meta = {"gen_id": gid, "data_delta_sha": data_sha, "config": cfg.model_dump(mode="json"),
                "best": {k: r.best[k] for k in ("step", "val_loss", "train_loss")},
                "loss_start": r.curve[0][2] if r.curve else None, "val_curve": [c[:2] for c in r.curve],
                "steps": int(r.config["steps"]), "lr": float(r.config["lr"]), "replay_k": int(r.config["replay_k"]),
                "trial_id": r.trial_id, "train_wall_seconds": r.seconds, "method": cfg.train.method,
                **({"beta": float(r.config.get("beta", cfg.train.dpo.beta)), "sft_weight": cfg.train.dpo.sft_weight,
                    "val_pref_accuracy": r.best.get("val_pref_accuracy")} if cfg.train.method == "dpo" else {})}
        r.child_sha = lin.models.put_adapter(dest, parent, meta)
    progress(gid, f"scoring the best checkpoints of {len(top)} trial(s) with the gate's evals (Ray tasks)")
    results = evaluate_many(lin, [r.child_sha for r in top] + [parent], spec, cfg, progress)
    parent_res = results[-1]
    for r, res in zip(top, results):
        s = scores_of(res, parent_res)
        verdict = gate(s, cfg.gate)
        r.scores = {"generalization": s.generalization, "recall": s.recall, "style_drift": s.style_drift,
                    "result": res, "parent": parent_res, "gen_scores": s}
        r.gate = "pass" if verdict.accepted else f"fail: {verdict.reason}"

    def key(r: TrialRecord):
        s = r.scores
        pref = -_checkpoint_rank(r.best)[0]  # dpo: val preference accuracy first (0 for every supervised trial)
        return (r.gate == "pass", pref, s["generalization"] + (s["recall"] or 0.0), -s["style_drift"], -r.best["val_loss"])

    winner = max(top, key=key)
    winner.chosen = True
    return winner


class SweepFailed(RuntimeError):
    pass


def trials_path(lin, gid: str) -> Path:
    return lin.root / "trials" / f"{gid}.csv"


def save_trials(lin, gid: str, records: list[TrialRecord]) -> Path:
    path = trials_path(lin, gid)
    write_trials_csv(path, records)
    atomic_write_json(lin.run_dir(gid) / "sweep.json", [r.row() for r in records])
    return path
