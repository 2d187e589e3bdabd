"""Faults injected into real Ray Train runs by tests, through `WorkerConfig.step_hook`
("tests.helpers.faults:<name>"). Ray's workers import this module from the test session's working
directory, which Ray puts on every worker's sys.path."""

from __future__ import annotations

import ray.train

FAIL_ONCE = "tests.helpers.faults:fail_once_at_step_15"
NAN_FOR_HIGH_LR = "tests.helpers.faults:nan_when_lr_at_least_0_005"
HIGH_LR = 0.005


def fail_once_at_step_15(cfg, step: int, rank: int, resumed_from: int, loss: float) -> float:
    """The last worker dies after step 15 of a run's first attempt (its last checkpoint: step 10)."""
    if step == 15 and resumed_from == 0 and rank == ray.train.get_context().get_world_size() - 1:
        raise RuntimeError(f"injected worker failure at step {step} (tests.helpers.faults)")
    return loss


def nan_when_lr_at_least_0_005(cfg, step: int, rank: int, resumed_from: int, loss: float) -> float:
    """A run whose lr is at least HIGH_LR diverges: its loss is NaN from its second step on."""
    return float("nan") if cfg.lr >= HIGH_LR and step >= 1 else loss
