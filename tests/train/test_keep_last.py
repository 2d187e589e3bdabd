"""`keep_last`: a run's last checkpoints, copied beside its best for a fine-tuning job to serve them
(no cluster: Ray Train's Checkpoint objects over plain folders)."""

from __future__ import annotations

from ray.train import Checkpoint

from evo.train.trainer import keep_last


def _reported(tmp_path, steps):
    """Ray Train's (checkpoint, metrics) pairs, in report order, each folder holding its step."""
    pairs = []
    for i, step in enumerate(steps):
        folder = tmp_path / "ray" / f"checkpoint_{i}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_text(f"step {step}, report {i}")
        pairs.append((Checkpoint.from_directory(str(folder)), {"step": step, "val_loss": 1.0 / step}))
    return pairs


def test_the_last_checkpoints_by_step_are_copied_once_each(tmp_path):
    dest = tmp_path / "run" / "checkpoints"
    (dest / "step-99").mkdir(parents=True)  # an earlier attempt's copy: not this run's
    kept = keep_last(_reported(tmp_path, [5, 10, 15, 10, 20]), 3, dest)  # 10 reported again by a resumed run
    assert sorted(kept) == [10, 15, 20] and sorted(p.name for p in dest.iterdir()) == ["step-10", "step-15", "step-20"]
    assert (kept[10] / "adapter_model.safetensors").read_text() == "step 10, report 3"  # the resumed run's
    assert keep_last(_reported(tmp_path / "b", [5]), 0, dest) == {} and not dest.exists()
