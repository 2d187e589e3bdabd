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


KILL_CONTROLLER = "tests.helpers.faults:kill_the_controller_at_step_5"


def kill_the_controller_at_step_5(cfg, step: int, rank: int, resumed_from: int, loss: float) -> float:
    """Rank 0 kills its run's Ray Train controller (SIGKILL, an ungraceful death) after step 5: the
    controller cannot remove its placement group, and the driver's fit() fails. One machine: the
    controller's pid, read from the state API, is a process here."""
    if step == 5 and rank == 0:
        import os
        import signal

        from ray.util.state import list_actors

        run = ray.train.get_context().get_experiment_name()
        for a in list_actors(filters=[("class_name", "=", "TrainController"), ("state", "=", "ALIVE")], detail=True):
            if a.pid and run in str(a.name or "") + str(a.repr_name or ""):
                os.kill(a.pid, signal.SIGKILL)
                break
        else:  # the run's name is not on its controller: the only live one is this run's (one run at a time)
            (a,) = list_actors(filters=[("class_name", "=", "TrainController"), ("state", "=", "ALIVE")], detail=True)
            os.kill(a.pid, signal.SIGKILL)
    return loss
