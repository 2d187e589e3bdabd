"""Run one training job on Ray Train and hand back its best checkpoint."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from evo.config import TrainConfig
from evo.train.loop import train_loop_per_worker


class TrainingError(RuntimeError):
    """A training run that failed after its retries."""


@dataclass
class TrainOutcome:
    best_dir: Path  # local copy of the checkpoint with the lowest validation loss
    best_metrics: dict
    summary: dict  # rank 0's TrainState at the end, plus resumed_from and world_size
    wall_seconds: float
    run_path: str


def build_trainer(loop_cfg: dict, train: TrainConfig, storage_path: str, name: str) -> TorchTrainer:
    resources = {"CPU": train.cpus_per_worker}
    if train.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(
            num_workers=train.num_workers, use_gpu=train.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(
                checkpoint_score_attribute="val_loss", checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=train.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # evo prints its own progress
        ),
    )


def run_training(loop_cfg: dict, train: TrainConfig, storage_path: str, name: str, dest: Path) -> TrainOutcome:
    """Fit, then copy the best checkpoint to `dest` (the driver registers it from there)."""
    t0 = time.perf_counter()
    try:
        result = build_trainer(loop_cfg, train, storage_path, name).fit()
    except Exception as e:  # Ray wraps the worker's exception; keep its message, drop Ray's frames
        raise TrainingError(f"training run {name} failed after {train.max_failures} retries: {e}") from e
    if result.error is not None:
        raise TrainingError(f"training run {name} failed: {result.error}")
    if not result.best_checkpoints:
        raise TrainingError(f"training run {name} reported no checkpoint")
    best_ckpt, best_metrics = min(result.best_checkpoints, key=lambda cm: cm[1]["val_loss"])
    if dest.exists():
        shutil.rmtree(dest)
    best_ckpt.to_directory(str(dest))
    return TrainOutcome(dest, dict(best_metrics), dict(result.return_value or {}),
                        time.perf_counter() - t0, str(result.path))
