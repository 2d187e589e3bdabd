"""What a training run's workers are told (`train_loop_config`), and what the run leaves in a model's meta."""

from __future__ import annotations

from evo.config import EvoConfig
from evo.lineage.root import Lineage
from evo.storage import uri_of


def loop_config(cfg: EvoConfig, lin: Lineage, gid: str, **extra) -> dict:
    t = cfg.train
    return {
        "root": lin.location, "mix_path": uri_of(lin.run_dir(gid) / "mix.parquet"),
        "val_path": uri_of(lin.run_dir(gid) / "val.parquet"), "strategy": t.strategy,
        "zero_stage": t.zero_stage, "steps": t.steps, "batch_size": t.batch_size, "lr": t.lr,
        "warmup_steps": t.warmup_steps, "checkpoint_every": t.checkpoint_every, "seed": t.seed,
        "lora": t.lora.model_dump(), "max_length": cfg.model.max_length, "dtype": cfg.model.dtype,
        "mode": "lora", "label": gid, **extra,
    }


def training_meta(out, loop_cfg: dict, cfg: EvoConfig, data_sha: str, gid: str) -> dict:
    """A trained model's meta.json: where it came from, its best checkpoint, and what it cost."""
    s = out.summary
    return {
        "gen_id": gid, "data_delta_sha": data_sha, "config": cfg.model_dump(mode="json"),
        "best": out.best_metrics, "loss_start": s["losses"][0] if s.get("losses") else None,
        "val_curve": s.get("val"), "train_seconds": s.get("step_seconds"), "tokens": s.get("tokens"),
        "train_wall_seconds": out.wall_seconds, "steps": loop_cfg["steps"], "lr": loop_cfg["lr"],
        "checkpoint_seconds": s.get("checkpoint_seconds"), "setup_seconds": s.get("setup_seconds"),
        "ray_startup_seconds": s.get("startup_seconds"), "ray_teardown_seconds": s.get("teardown_seconds"),
        "resumed_from": s.get("resumed_from"),
    }
