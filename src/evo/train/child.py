"""The one way evo trains a child: a generation of the driver or of a fine-tuning job (through
`evo.driver.run_generation`), and each arm of the targeted-vs-random experiment.

`build_child` takes the lineage, the parent, the records to train on (the mix and the val records
that choose its checkpoint) and the config; it writes the two for the workers, configures them, runs
Ray Train, and stores the model by sha with its training meta. Registering it is the caller's: the
driver proposes it as a generation's candidate, the experiment keeps it out of the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from evo.config import EvoConfig
from evo.data.mix import ReplayMix
from evo.data.records import Record
from evo.data.store import write_records
from evo.lineage.root import Lineage
from evo.progress import Progress
from evo.storage import uri_of
from evo.train.trainer import TrainOutcome, run_training
from evo.train.worker_config import WorkerConfig, training_meta, worker_config


def train_run(cfg: EvoConfig, lin: Lineage, gid: str, worker: WorkerConfig, progress: Progress,
              name: Optional[str] = None, dest: Optional[Path] = None) -> TrainOutcome:
    """One Ray Train run, its start and end reported: its Ray storage name (default `<run>-<gen>`,
    which a rerun resumes) and where its best checkpoint is copied (default the generation's run folder)."""
    t = cfg.train
    progress(gid, f"training on Ray Train: {t.num_workers} workers, {t.strategy}"
             + (f" ZeRO-{t.zero_stage}" if t.strategy == "deepspeed" else "")
             + f", {worker.steps} steps, checkpoint every {worker.checkpoint_every}")
    out = run_training(worker, t, lin.ray_storage(), name or f"{cfg.name}-{gid}", dest or lin.run_dir(gid) / "best",
                       cfg.ray, lambda message: progress(gid, message))
    s = out.summary
    tps = s["tokens"] / s["step_seconds"] if s.get("step_seconds") else float("nan")
    progress(gid, f"trained in {out.wall_seconds:.0f}s ({s.get('step_seconds', 0):.1f}s in steps, "
             f"{tps:.0f} tokens/s); best checkpoint at step {out.best_metrics['step']} "
             f"(val loss {out.best_metrics['val_loss']:.3f})")
    return out


@dataclass
class Child:
    """A child made by `build_child`: stored by sha in models/, not registered."""

    sha: str
    out: TrainOutcome  # its Ray Train run: the best checkpoint's metrics, the wall time


def build_child(cfg: EvoConfig, lin: Lineage, gid: str, parent: str, mix: ReplayMix, val: list[Record],
                progress: Progress, folder: Optional[Path] = None, data_sha: str = "", meta: Optional[dict] = None,
                name: Optional[str] = None, **changes: Any) -> Child:
    """A LoRA child of `parent` trained on `mix`, its checkpoint chosen on `val`.

    Both are written for the workers in `folder` (default: the generation's run folder); the workers
    are configured from `cfg` (`changes` override fields of their `WorkerConfig`); Ray Train trains
    it (`name`: see `train_run`); the model is stored with its training meta, `meta` added."""
    folder = folder or lin.run_dir(gid)
    write_records(folder / "mix.parquet", mix.records)
    write_records(folder / "val.parquet", val)
    worker = worker_config(cfg, lin, gid, parent_sha=parent, mix_path=uri_of(folder / "mix.parquet"),
                           val_path=uri_of(folder / "val.parquet"), **changes)
    out = train_run(cfg, lin, gid, worker, progress, name, folder / "best")
    meta = {**training_meta(out, worker, cfg, data_sha, gid), **(meta or {})}
    return Child(lin.models.put_adapter(out.best_dir, parent, meta), out)
