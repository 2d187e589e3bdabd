"""What a training run's workers are told, and what the run leaves in a model's meta.

`WorkerConfig` is the whole contract between the driver side (the generation loop, a sweep trial,
the experiment) and `train_loop_per_worker`. Ray Train hands its workers a plain dict
(`train_loop_config`); `as_loop_config()` makes it and `WorkerConfig.from_loop_config` rebuilds it
on the worker, so a missing or unknown field fails at the start of the run, by name.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional

from evo.errors import EvoError
from evo.storage import uri_of

if TYPE_CHECKING:  # the workers import this module; they need neither
    from evo.config import EvoConfig
    from evo.lineage.root import Lineage


class WorkerConfigError(EvoError, ValueError):
    pass


class TrainingPaused(EvoError):
    """A run that stopped early because it was asked to pause (`WorkerConfig.pause_file`): its last
    checkpoint is of step `step` (of `steps`), and fitting it again under the same name and storage
    resumes from there (Ray Train restores the run's checkpoints). Raised by `evo.train.trainer.run_training`;
    defined here, where the fine-tuning runner can catch it without importing torch."""

    def __init__(self, name: str, step: int, steps: int):
        super().__init__(f"training run {name} paused at step {step} of {steps}")
        self.step, self.steps = step, steps


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class WorkerConfig:
    root: str  # the lineage root as every node opens it (a folder, or a URI)
    mix_path: str  # the training records, in order (Parquet; a path or a URI under the root)
    val_path: str  # the validation records: checkpoint choice only
    steps: int  # optimizer steps of the run
    batch_size: int  # the global batch, split across workers
    lr: float  # peak learning rate (linear warm-up, then cosine to 10%)
    warmup_steps: int
    checkpoint_every: int  # steps between checkpoints; each is scored on val_path
    seed: int
    max_length: int  # tokens per example (longer ones are cut)
    dtype: str  # float32, bfloat16 or float16
    mode: Literal["lora", "full"] = "lora"  # lora: a fresh adapter on parent_sha; full: every weight of init_dir
    parent_sha: str = ""  # mode lora: the generation the adapter is trained on
    init_dir: str = ""  # mode full: the initial model folder (a path or a URI under the root)
    lora: Optional[LoraSpec] = None  # mode lora: the adapter's shape
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: int = 2  # strategy deepspeed: ZeRO stage 0-3
    label: str = "train"  # prefix of the progress lines the run prints
    init_checkpoint: str = ""  # a run with no checkpoint of its own starts from this one (a PBT exploit)
    # a local file rank 0 appends each checkpoint's metrics to, one JSON line each, as they happen (a
    # fine-tuning job's live events; a folder root on one machine only); empty: none
    metrics_path: str = ""
    # a file whose appearance pauses the run: after the step in progress every worker stops, a checkpoint
    # of that step is reported, and the loop returns `paused` (a fine-tuning job's pause, written by
    # `evo.finetune.jobs.JobStore.pause`; a folder root that every worker sees); empty: never paused
    pause_file: str = ""
    # read on the driver's side, not the workers': the run's last this many checkpoints are copied beside
    # its best (`evo.train.trainer.keep_last`), for a fine-tuning job to serve them as models; 0: none
    keep_checkpoints: int = 0
    rehearsal_kl: float = 0.0  # weight of KL(parent ‖ child) on self-replay rows, which then skip their CE
    # several examples per row (evo.train.examples.pack) instead of right-padding each batch to its
    # longest; the same labelled tokens and loss. DPO batches are never packed.
    packing: bool = False
    # supervised: token loss on every record; dpo: preference records learn DPO against the parent (the
    # new adapter switched off), with weight sft_weight on their chosen answers' token loss; the other
    # records (replay) keep their token loss
    method: Literal["supervised", "dpo"] = "supervised"
    beta: float = 0.1  # method dpo: DPO's beta
    sft_weight: float = 0.0  # method dpo: weight of the chosen answers' token loss
    # "module:function", imported on every worker and called after each optimizer step as
    # f(config, step, rank, resumed_from, loss) -> loss. For tests that inject faults (a worker
    # failing, a loss turning NaN); empty in normal runs.
    step_hook: str = ""

    def __post_init__(self):
        problems = []
        if self.mode == "lora" and (not self.parent_sha or self.lora is None):
            problems.append("mode lora needs parent_sha and lora")
        if self.mode == "full" and not self.init_dir:
            problems.append("mode full needs init_dir")
        if self.rehearsal_kl < 0 or (self.rehearsal_kl > 0 and self.mode != "lora"):
            problems.append("rehearsal_kl must be >= 0, and > 0 only in mode lora (the parent is the adapter switched off)")
        if self.method == "dpo" and (self.mode != "lora" or self.beta <= 0 or self.sft_weight < 0):
            problems.append("method dpo needs mode lora (the parent is the adapter switched off), beta > 0 and "
                            "sft_weight >= 0")
        if self.checkpoint_every <= 0 or self.steps <= 0 or self.batch_size <= 0:
            problems.append("steps, batch_size and checkpoint_every must be positive")
        if problems:
            raise WorkerConfigError(f"worker config {self.label}: " + "; ".join(problems))

    def replace(self, **changes: Any) -> WorkerConfig:
        return dataclasses.replace(self, **changes)

    def as_loop_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_loop_config(cls, raw: dict[str, Any]) -> WorkerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = set(raw) - names, {f.name for f in dataclasses.fields(cls)
                                              if f.default is dataclasses.MISSING} - set(raw)
        if unknown or missing:
            raise WorkerConfigError(f"train_loop_config: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
        lora = raw.get("lora")
        lora = LoraSpec(**{**lora, "target_modules": tuple(lora["target_modules"])}) if isinstance(lora, dict) else lora
        return cls(**{**raw, "lora": lora})

    def hook(self) -> Optional[Callable]:
        if not self.step_hook:
            return None
        module, _, name = self.step_hook.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise WorkerConfigError(f"step_hook {self.step_hook!r}: cannot import it ({e})") from None


def worker_config(cfg: EvoConfig, lin: Lineage, gid: str, **changes: Any) -> WorkerConfig:
    """A LoRA run of generation `gid` on the run folder's mix and val files, from the config's `train`."""
    t = cfg.train
    lora = LoraSpec(t.lora.r, t.lora.alpha, t.lora.dropout, tuple(t.lora.target_modules))
    base = dict(
        root=lin.location, mix_path=uri_of(lin.run_dir(gid) / "mix.parquet"),
        val_path=uri_of(lin.run_dir(gid) / "val.parquet"), strategy=t.strategy, zero_stage=t.zero_stage,
        steps=t.steps, batch_size=t.batch_size, lr=t.lr, warmup_steps=t.warmup_steps,
        checkpoint_every=t.checkpoint_every, seed=t.seed, lora=lora, rehearsal_kl=t.rehearsal_kl, packing=t.packing,
        max_length=cfg.model.max_length,
        dtype=cfg.model.dtype, label=gid, method=t.method, beta=t.dpo.beta, sft_weight=t.dpo.sft_weight)
    return WorkerConfig(**{**base, **changes})


def training_meta(out, worker: WorkerConfig, cfg: EvoConfig, data_sha: str, gid: str) -> dict:
    """A trained model's meta.json: where it came from, its best checkpoint, and what it cost."""
    s = out.summary
    return {
        "gen_id": gid, "data_delta_sha": data_sha, "config": cfg.model_dump(mode="json"),
        "best": out.best_metrics, "loss_start": s["losses"][0] if s.get("losses") else None,
        "val_curve": s.get("val"), "train_seconds": s.get("step_seconds"), "tokens": s.get("tokens"),
        "train_wall_seconds": out.wall_seconds, "steps": worker.steps, "lr": worker.lr,
        "checkpoint_seconds": s.get("checkpoint_seconds"), "setup_seconds": s.get("setup_seconds"),
        "load_seconds": s.get("load_seconds"),
        "ray_startup_seconds": s.get("startup_seconds"), "ray_teardown_seconds": s.get("teardown_seconds"),
        "resumed_from": s.get("resumed_from"), "torch_threads": s.get("torch_threads"),
        "steps_run": s.get("steps_run"),  # by the last attempt: from resumed_from (a pause's, a restart's) to steps
        "poll_interval_s": s.get("poll_interval_s"),  # as the workers saw it (train.poll_interval_s)
        "method": worker.method, **({"beta": worker.beta, "sft_weight": worker.sft_weight} if worker.method == "dpo" else {}),
    }
