"""Nothing evo starts waits forever in silence, and it runs beside another Ray instance on the machine.

The module's cluster is started as `evo` starts one (`evo.ray_start.start_ray`), while a second Ray
instance of the test's own (a `ray start` head, `LocalHead`, stopped by its own process group) is up:
Ray's helpers inside evo's cluster must still find evo's (RAY_ADDRESS, `name_the_cluster`)."""

from __future__ import annotations

import os
import time

import pytest

from evo.lineage.root import Lineage
from evo.progress import Progress
from tests.helpers import copy_root, ensure_base, tiny_config

pytestmark = pytest.mark.integration

SWEEP = ["tune.num_samples=2", "tune.max_concurrent=2", "tune.num_workers=1", "tune.cpus_per_worker=0.5",
         "tune.steps=[10, 20]", "tune.replay_k=[0, 20]", "tune.lr=[0.001, 0.003]", "train.checkpoint_every=5",
         "tune.evaluate_top=2", "gate.min_recall=null", "gate.min_generalization=null", "gate.max_style_drift=null",
         "ray.warn_after_s=60", "ray.fail_after_s=150"]  # a hang fails well inside the test's time


class Lines(Progress):
    def __init__(self):
        super().__init__(quiet=True)
        self.lines: list[tuple[float, str]] = []

    def __call__(self, where: str, message: str) -> None:
        self.lines.append((time.monotonic(), f"{where} | {message}"))


@pytest.fixture(scope="module")
def two_clusters(demo_dir, _base_cache):
    """A second Ray instance (a head on its own ports), then evo's own cluster in-process."""
    import ray

    from evo.ray_start import start_ray
    from evo.testing.clusters import use_private_token
    from evo.testing.local_head import LocalHead

    before = os.environ.get("RAY_ADDRESS")
    other = LocalHead(24100, 1, token=use_private_token()).start()  # the session's token (conftest)
    try:
        start_ray(None, num_cpus=3)
        try:
            yield {"other": other, "gcs": ray.get_runtime_context().gcs_address,
                   "base": ensure_base(demo_dir, _base_cache)}
        finally:
            ray.shutdown()
            if before is None:
                os.environ.pop("RAY_ADDRESS", None)
            else:
                os.environ["RAY_ADDRESS"] = before
    finally:
        other.stop()


def test_a_sweep_and_its_evals_complete_beside_another_ray_instance(two_clusters, demo_dir, tmp_path):
    import ray
    from ray.util import placement_group_table

    from evo.driver import run_generation

    @ray.remote(num_cpus=0)
    def seen():
        from ray.util.state import list_actors

        list_actors(limit=5)  # what Ray Train's PlacementGroupCleaner asks; raised with two instances
        return os.environ.get("RAY_ADDRESS")

    assert ray.get(seen.remote()) == two_clusters["gcs"] == os.environ["RAY_ADDRESS"]

    root = copy_root(two_clusters["base"], tmp_path)
    cfg = tiny_config(demo_dir, *SWEEP)
    lines = Lines()
    t0 = time.monotonic()
    row = run_generation(cfg, Lineage(root), 1, cfg.data.generations[0], lines, tune=True)
    assert row["decision"] == "promoted" and row["trial"], [m for _, m in lines.lines]
    assert time.monotonic() - t0 < 150
    assert not [m for _, m in lines.lines if "no progress" in m]
    assert [p["state"] for p in placement_group_table().values() if p["state"] != "REMOVED"] == []


def test_a_task_that_can_never_be_placed_is_reported_then_fails_the_step(two_clusters, demo_dir):
    """Eval tasks asking for a GPU on a cluster with none: the watchdog says what they wait for, then
    the step fails with that message, within the stated times."""
    from evo.evals.lineage_evals import eval_spec, evaluate_many
    from evo.ray_waits import Stalled

    cfg = tiny_config(demo_dir, "train.use_gpu=true", "ray.warn_after_s=2", "ray.fail_after_s=6", "ray.poll_s=0.5")
    lin = Lineage(two_clusters["base"])
    sha = lin.registry.by_gen("gen-0")
    lines = Lines()
    t0 = time.monotonic()
    with pytest.raises(Stalled) as failed:
        evaluate_many(lin, [sha], eval_spec(cfg, {}, [], []), cfg, lines)
    took = time.monotonic() - t0
    assert 6 <= took < 30
    said = [(t - t0, m) for t, m in lines.lines]
    warned = [t for t, m in said if "no progress" in m and "GPU: 1" in m and "giving up" not in m]
    assert warned and 2 <= warned[0] < 6, said
    message = str(failed.value)
    assert "eval tasks" in message and "GPU: 1" in message and "CPU" in message and "ray.fail_after_s" in message


def test_a_serve_deployment_that_can_never_be_placed_is_reported_then_deleted(two_clusters):
    """A replica asking for a GPU on a cluster with none: `serve.run` alone would wait forever."""
    from ray import serve

    from evo.config import RayWaitsConfig
    from evo.ray_waits import Stalled, serve_up

    @serve.deployment(ray_actor_options={"num_gpus": 1, "num_cpus": 0})
    class NeedsAGpu:
        def __call__(self, request) -> str:
            return "never"

    serve.start(http_options={"host": "127.0.0.1", "port": 24180})
    try:
        said: list[tuple[float, str]] = []
        t0 = time.monotonic()
        with pytest.raises(Stalled) as failed:
            serve_up(NeedsAGpu.bind(), "evo-never", "/never", RayWaitsConfig(warn_after_s=2, fail_after_s=6, poll_s=0.5),
                     lambda m: said.append((time.monotonic() - t0, m)))
        assert 6 <= time.monotonic() - t0 < 30, said
        message = str(failed.value)
        assert "Serve application 'evo-never'" in message and "GPU: 1" in message and "ray.fail_after_s" in message
        warned = [t for t, m in said if "no progress" in m and "giving up" not in m]
        assert warned and 2 <= warned[0] < 6, said
        deadline = time.monotonic() + 60  # deleting it waits out the replica's graceful shutdown
        while "evo-never" in serve.status().applications and time.monotonic() < deadline:
            time.sleep(1)
        assert "evo-never" not in serve.status().applications  # nothing half-deployed is left
    finally:
        serve.shutdown()
