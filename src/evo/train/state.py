"""Checkpoint contents besides the weights: progress and optimizer state, pickle-free."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from evo.atomic import atomic_write_json


class ResumeMismatch(RuntimeError):
    """A run's own checkpoint cannot be continued: its steps were drawn from other records or workers."""


@dataclass
class TrainState:
    """Where a run is, carried across worker restarts inside each checkpoint."""

    step: int = 0
    losses: list[float] = field(default_factory=list)  # train loss per step, rank 0's batches
    val: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    tokens: int = 0  # non-pad tokens seen, all workers
    step_seconds: float = 0.0  # time inside optimizer steps (rank 0), excluding evals and saves
    checkpoint_seconds: float = 0.0  # validation loss, saving and reporting checkpoints (rank 0)
    setup_seconds: float = 0.0  # loop start to first step in the latest attempt: loading, wrapping
    load_seconds: float = 0.0  # of setup: loading the parent (or the checkpoint) in the latest attempt
    mix_sha: str = ""  # the training records the steps so far were drawn from (`records_sha`)
    world: int = 0  # the workers they were divided among

    def continues(self, records, world: int, where: str) -> None:
        """Refuse to continue this run's checkpoint on other records or workers: a step's examples are
        picked by its index over the records divided among the workers, so a mix rebuilt with other
        records (a correction, a file deleted meanwhile) or another number of workers would train some
        records twice and skip others."""
        if not self.step or not self.mix_sha:
            return
        now = records_sha(records)
        if (now, world) != (self.mix_sha, self.world):
            raise ResumeMismatch(
                f"{where}: the run's checkpoint of step {self.step} was trained on other records or workers "
                f"({self.world} worker(s), records {self.mix_sha[:12]}; now {world}, {now[:12]}: a correction or a "
                "file deletion made since changes the mix): continuing would train some records twice and skip "
                "others. Start the generation again (a fine-tuning job: cancel it and create it again)")

    def save(self, folder: Path) -> None:
        atomic_write_json(folder / "trainer_state.json", asdict(self))

    @classmethod
    def load(cls, folder: Path) -> TrainState:
        raw = json.loads((folder / "trainer_state.json").read_text())
        raw["val"] = [tuple(v) for v in raw.get("val", [])]
        return cls(**raw)


def save_optimizer(opt: torch.optim.Optimizer, folder: Path) -> None:
    """Flatten per-parameter tensors into safetensors; nothing else of the state is needed."""
    flat = {}
    for idx, per_param in opt.state_dict()["state"].items():
        for name, value in per_param.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            flat[f"{idx}.{name}"] = t.detach().cpu().contiguous()
    save_file(flat, str(folder / "optimizer.safetensors"))


def load_optimizer(opt: torch.optim.Optimizer, folder: Path) -> bool:
    path = folder / "optimizer.safetensors"
    if not path.exists():
        return False
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in load_file(str(path)).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return True


def records_sha(records) -> str:
    """A sha of training records in order: the same records, the same sha, in any process."""
    import hashlib

    h = hashlib.sha256()
    for r in records:
        h.update(repr(r).encode())
        h.update(b"\n")
    return h.hexdigest()
