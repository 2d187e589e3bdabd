"""Run one training job on Ray Train and hand back its best checkpoint."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from evo.config import RayWaitsConfig, TrainConfig
from evo.errors import EvoError
from evo.ray_waits import Stalled, Watchdog, cleaned_up, interrupt_main
from evo.train.loop import POLL_ENV_VAR, train_loop_per_worker
from evo.train.worker_config import TrainingPaused, WorkerConfig


class TrainingError(EvoError, RuntimeError):
    """A training run that failed after its retries."""


@dataclass
class TrainOutcome:
    best_dir: Path  # local copy of the checkpoint with the lowest validation loss
    best_metrics: dict
    summary: dict  # rank 0's TrainState at the end, plus resumed_from and world_size
    wall_seconds: float
    run_path: str
    kept: dict[int, Path] = field(default_factory=dict)  # step -> a copy of that checkpoint (`keep_last`)


def keep_last(checkpoints: list, keep: int, folder: Path) -> dict[int, Path]:
    """The last `keep` reported checkpoints, by step (Ray Train's (checkpoint, metrics) pairs), each
    copied to `folder`/step-N; {step: its copy}. `folder` is emptied first: a rerun keeps its own."""
    if folder.exists():
        shutil.rmtree(folder)
    by_step = {int(m["step"]): c for c, m in checkpoints}  # a resumed run reports a step once more: one copy
    kept = {}
    for step in sorted(by_step)[-keep:] if keep > 0 else []:
        kept[step] = folder / f"step-{step}"
        by_step[step].to_directory(str(kept[step]))
    return kept


class LeanTrainer(TorchTrainer):
    """A TorchTrainer less the default callbacks that evo's runs only pay for, each an actor process
    more per run (a fresh one: Ray Train gives its actors a runtime env of their own):

    - Ray Data's `DatasetsCallback`, in a run given no Ray Datasets (evo's: each worker reads its shard of
      the mix itself). It starts a DatasetManager actor and sends a DataContext to every worker.
    - the `PlacementGroupCleanerCallback`, where the caller removes what the run leaves (`cleaned_up`,
      as `run_training` does). Its detached actor asks the state API every second whether the controller
      lives, to free the run's placement group if the controller dies ungracefully; `cleaned_up` frees it
      when fit() returns or raises. A sweep trial's run keeps it: Tune stops trials by killing their
      actors while the sweep goes on, and a leaked group would hold CPUs the next trials need.

    Measured on 2 cores: docs/benchmarks.md "Ray Train's start-up". The hook is Ray's private
    `_create_default_callbacks`: tests/train/test_trainer_callbacks.py fails if a Ray upgrade moves it."""

    def __init__(self, *args, caller_cleans_up: bool = False, **kwargs):
        self.caller_cleans_up = caller_cleans_up
        super().__init__(*args, **kwargs)

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        left_out = set() if getattr(self, "datasets", None) else {"DatasetsCallback"}
        if self.caller_cleans_up:
            left_out.add("PlacementGroupCleanerCallback")
        return [c for c in callbacks if type(c).__name__ not in left_out]


def build_trainer(worker: WorkerConfig, train: TrainConfig, storage_path: str, name: str, callbacks=None,
                  caller_cleans_up: bool = False) -> TorchTrainer:
    """The TorchTrainer of one run; `callbacks` are Ray Train UserCallbacks (a sweep forwards every
    checkpoint to Tune with one). To start from another run's checkpoint, set
    `worker.init_checkpoint` (the loop loads it when the run has none of its own). `caller_cleans_up`:
    the caller removes the placement group a dead controller leaves (`LeanTrainer`)."""
    resources = {"CPU": train.cpus_per_worker}
    if train.use_gpu:
        resources["GPU"] = 1
    return LeanTrainer(
        train_loop_per_worker,
        train_loop_config=worker.as_loop_config(),
        scaling_config=ScalingConfig(
            num_workers=train.num_workers, use_gpu=train.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(
                checkpoint_score_attribute="val_loss", checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=train.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # evo prints its own progress
            callbacks=callbacks or [],
        ),
        caller_cleans_up=caller_cleans_up,
    )


@contextmanager
def controller_polling(train: TrainConfig) -> Iterator[None]:
    """Runs fitted inside poll their workers every `train.poll_interval_s`, unless the environment
    already sets the interval (the user's choice wins); the environment is restored after.

    A checkpoint report and the end of a run wait for a poll (Ray's 2 s default cost a short tiny
    generation 0.6 s per checkpoint and 5 s at the end), and each poll takes a little step time from
    the workers on few cores (docs/benchmarks.md). Ray Train reads the variable from the environment
    of the process that calls fit() and hands it to its controller."""
    if POLL_ENV_VAR in os.environ:
        yield
        return
    os.environ[POLL_ENV_VAR] = f"{train.poll_interval_s:g}"
    try:
        yield
    finally:
        os.environ.pop(POLL_ENV_VAR, None)


def _fit_interruptibly(trainer: TorchTrainer, dog: Optional[Watchdog] = None):
    """fit(), with Ctrl-C surfacing as KeyboardInterrupt, and a stall (`dog`) as `Stalled`.

    Ray Train's own SIGINT handler aborts the run gracefully (checkpoints stay), then ends the
    driver with SystemExit from inside the handler; evo turns that back into KeyboardInterrupt so
    the caller can say how to resume, and puts the previous handler back. The watchdog stops a
    stalled run the same way (a SIGINT to the main thread), and the run then fails as stalled.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        return trainer.fit()
    except (SystemExit, KeyboardInterrupt) as e:
        if dog is not None:
            dog.check()
        raise KeyboardInterrupt("training run aborted by Ctrl-C") from e
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def run_training(worker: WorkerConfig, train: TrainConfig, storage_path: str, name: str, dest: Path,
                 waits: Optional[RayWaitsConfig] = None, say: Callable[[str], None] = lambda m: None) -> TrainOutcome:
    """Fit, then copy the best checkpoint to `dest` (the driver registers it from there).

    Under the watchdog (`waits`): a worker group that Ray cannot place is reported through `say`, then
    the run is aborted and fails as `Stalled` (on the main thread; elsewhere it is only reported).
    A run that paused (`WorkerConfig.pause_file`) raises `TrainingPaused`: its checkpoints stay in Ray's
    storage for the next fit of the same name. Placement groups and actors the run left are removed when it ends."""
    t0, started_at = time.perf_counter(), time.time()
    main = threading.current_thread() is threading.main_thread()
    dog = Watchdog(f"Ray Train run {name} ({train.num_workers} worker(s), {train.cpus_per_worker:g} CPU"
                   + (" and 1 GPU" if train.use_gpu else "") + " each)", waits or RayWaitsConfig(), say,
                   on_stall=interrupt_main() if main else None)
    try:
        with cleaned_up(say), controller_polling(train), dog:
            result = _fit_interruptibly(build_trainer(worker, train, storage_path, name, caller_cleans_up=True), dog)
    except (KeyboardInterrupt, Stalled):
        raise
    except Exception as e:  # Ray wraps the worker's exception; keep its message, drop Ray's frames
        dog.check()
        raise TrainingError(f"training run {name} failed after {train.max_failures} retries: {e}") from e
    dog.check()
    if result.error is not None:
        raise TrainingError(f"training run {name} failed: {result.error}")
    if (result.return_value or {}).get("paused"):
        raise TrainingPaused(name, int(result.return_value["step"]), worker.steps)
    if not result.best_checkpoints:
        raise TrainingError(f"training run {name} reported no checkpoint")
    best_ckpt, best_metrics = min(result.best_checkpoints, key=lambda cm: cm[1]["val_loss"])
    if dest.exists():
        shutil.rmtree(dest)
    best_ckpt.to_directory(str(dest))
    kept = keep_last(result.best_checkpoints, worker.keep_checkpoints, dest.parent / "checkpoints")
    summary = dict(result.return_value or {})
    if "loop_started_at" in summary:  # Ray Train's own cost: before the loop starts, after it ends
        summary["startup_seconds"] = summary["loop_started_at"] - started_at
        summary["teardown_seconds"] = time.time() - summary["loop_ended_at"]
    return TrainOutcome(dest, dict(best_metrics), summary, time.perf_counter() - t0, str(result.path), kept)
