"""The Ray Train run evo builds: Ray's own callbacks, less those a run of evo's only pays for (an actor
process per run each: docs/benchmarks.md "Ray Train's start-up"): the Ray Data one in a run without
datasets; the placement-group cleaner where the caller removes what the run leaves, and only there."""

from ray.train.torch import TorchTrainer

from evo.config import TrainConfig
from evo.train.loop import train_loop_per_worker
from evo.train.trainer import build_trainer
from evo.train.worker_config import WorkerConfig


def _names(trainer) -> list[str]:
    return [type(c).__name__ for c in trainer._create_default_callbacks()]


def _worker(tmp_path) -> WorkerConfig:
    return WorkerConfig(root=str(tmp_path), mix_path="mix.parquet", val_path="val.parquet", steps=1, batch_size=1,
                        lr=1e-3, warmup_steps=0, checkpoint_every=1, seed=0, max_length=8, dtype="float32",
                        mode="full", init_dir="init")


def test_a_run_without_datasets_keeps_every_callback_of_ray_but_the_ray_data_one(tmp_path):
    """A sweep trial's run (built without `caller_cleans_up`): Tune kills stopped trials' actors while
    the sweep goes on, so Ray's cleaner of a dead controller's placement group stays."""
    worker = _worker(tmp_path)
    ours = build_trainer(worker, TrainConfig(), str(tmp_path / "runs"), "run")
    rays = TorchTrainer(train_loop_per_worker, train_loop_config=worker.as_loop_config())
    assert "DatasetsCallback" in _names(rays)  # what Ray builds for every run
    assert _names(ours) == [n for n in _names(rays) if n != "DatasetsCallback"]
    assert {"BackendSetupCallback", "PlacementGroupCleanerCallback", "UserCallbackHandler"} <= set(_names(ours))


def test_a_run_whose_caller_removes_its_leftovers_starts_no_cleaner_actor(tmp_path):
    """run_training's runs: `cleaned_up` removes the placement group a dead controller leaves when fit()
    returns or raises, so Ray's detached cleaner (a process polling the state API each second) is left out."""
    worker = _worker(tmp_path)
    ours = build_trainer(worker, TrainConfig(), str(tmp_path / "runs"), "run", caller_cleans_up=True)
    rays = TorchTrainer(train_loop_per_worker, train_loop_config=worker.as_loop_config())
    assert _names(ours) == [n for n in _names(rays) if n not in ("DatasetsCallback", "PlacementGroupCleanerCallback")]
    assert {"BackendSetupCallback", "UserCallbackHandler"} <= set(_names(ours))
