"""A training run's pause: the workers stop at the same step once its pause file appears.

A fine-tuning job's pause (`evo.finetune.jobs.JobStore.pause`) writes the file; `train_loop_per_worker`
asks `pause_asked` after every step, then writes a checkpoint of that step and returns `paused`.
Only torch here, so that a test can join real processes without importing the loop's libraries.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def pause_asked(pause_file: str, world: int, device) -> bool:
    """Whether the run was asked to pause (`pause_file` exists), agreed by every worker: one that sees it
    stops them all at the same step (one worker stopping alone would hang the others in their next
    collective). No pause file (`""`): never, at no cost."""
    if not pause_file:
        return False
    asked = os.path.exists(pause_file)
    if world == 1 or not (dist.is_available() and dist.is_initialized()):
        return asked
    flag = torch.tensor([int(asked)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
