"""Nothing evo starts waits forever in silence: a step whose Ray work can never be placed is reported
while it waits, then fails with what it waited for, within the configured times (ray.warn_after_s,
ray.fail_after_s). On the session's shared cluster; that evo's cluster is found beside another Ray
instance on the machine is checked where a sweep runs anyway (test_sweep)."""

from __future__ import annotations

import time

import pytest

from evo.lineage.root import Lineage
from evo.progress import Progress
from tests.helpers import tiny_config

pytestmark = pytest.mark.integration


class Lines(Progress):
    def __init__(self):
        super().__init__(quiet=True)
        self.lines: list[tuple[float, str]] = []

    def __call__(self, where: str, message: str) -> None:
        self.lines.append((time.monotonic(), f"{where} | {message}"))


def test_a_task_that_can_never_be_placed_is_reported_then_fails_the_step(base_root, demo_dir):
    """Eval tasks asking for a GPU on a cluster with none: the watchdog says what they wait for, then
    the step fails with that message, within the stated times."""
    from evo.evals.lineage_evals import eval_spec, evaluate_many
    from evo.ray_waits import Stalled

    cfg = tiny_config(demo_dir, "train.use_gpu=true", "ray.warn_after_s=1", "ray.fail_after_s=3", "ray.poll_s=0.25")
    lin = Lineage(base_root)
    sha = lin.registry.by_gen("gen-0")
    lines = Lines()
    t0 = time.monotonic()
    with pytest.raises(Stalled) as failed:
        evaluate_many(lin, [sha], eval_spec(cfg, {}, [], []), cfg, lines)
    took = time.monotonic() - t0
    assert 3 <= took < 30
    said = [(t - t0, m) for t, m in lines.lines]
    warned = [t for t, m in said if "no progress" in m and "GPU: 1" in m and "giving up" not in m]
    # reported first, then given up fail_after_s - warn_after_s later (2 s, less a late poll): the idle time
    # counts from when Ray shows the demand pending, which on a busy machine can be a while after t0
    assert warned and 1 <= warned[0] <= took - 1, said
    message = str(failed.value)
    assert "eval tasks" in message and "GPU: 1" in message and "CPU" in message and "ray.fail_after_s" in message


def test_a_serve_deployment_that_can_never_be_placed_is_reported_then_deleted(ray_cluster):
    """A replica asking for a GPU on a cluster with none: `serve.run` alone would wait forever."""
    from ray import serve

    from evo.config import RayWaitsConfig
    from evo.ray_waits import Stalled, serve_up

    # a replica that never starts cannot answer Serve's shutdown call: Serve kills it after the graceful
    # timeout (20 s by default), which deleting the application then waits out; 1 s here
    @serve.deployment(ray_actor_options={"num_gpus": 1, "num_cpus": 0}, graceful_shutdown_timeout_s=1)
    class NeedsAGpu:
        def __call__(self, request) -> str:
            return "never"

    serve.start(http_options={"host": "127.0.0.1", "port": 24180})
    try:
        said: list[tuple[float, str]] = []
        t0 = time.monotonic()
        with pytest.raises(Stalled) as failed:
            serve_up(NeedsAGpu.bind(), "evo-never", "/never", RayWaitsConfig(warn_after_s=1, fail_after_s=3, poll_s=0.25),
                     lambda m: said.append((time.monotonic() - t0, m)))
        took = time.monotonic() - t0
        assert 3 <= took < 30, said
        message = str(failed.value)
        assert "Serve application 'evo-never'" in message and "GPU: 1" in message and "ray.fail_after_s" in message
        warned = [t for t, m in said if "no progress" in m and "giving up" not in m]
        assert warned and 1 <= warned[0] <= took - 1, said  # reported, then given up (as for the eval tasks)
        deadline = time.monotonic() + 60  # deleting it waits out the replica's graceful shutdown (1 s)
        while "evo-never" in serve.status().applications and time.monotonic() < deadline:
            time.sleep(0.25)
        assert "evo-never" not in serve.status().applications  # nothing half-deployed is left
    finally:
        serve.shutdown()


def test_a_run_whose_controller_dies_leaves_no_placement_group_and_no_cleaner(base_root, demo_dir, tmp_path, ray_cluster):
    """A generation's Ray Train controller killed mid-run (SIGKILL): the step fails, the placement group
    the controller could not remove is removed by the driver (`cleaned_up`), and no Ray Train
    PlacementGroupCleaner actor was started for the run (evo.train.trainer.LeanTrainer leaves it out)."""
    from ray.util import placement_group_table
    from ray.util.state import list_actors

    from evo.driver import run_generation
    from evo.progress import Silent
    from tests.helpers import copy_root
    from tests.helpers.faults import KILL_CONTROLLER

    def cleaners() -> int:
        return len(list_actors(filters=[("class_name", "=", "PlacementGroupCleaner")], limit=10000))

    cfg = tiny_config(demo_dir, "train.num_workers=1")
    lin = Lineage(copy_root(base_root, tmp_path))
    before = cleaners()
    registry = lin.registry.load()
    with pytest.raises(Exception, match="training run"):
        run_generation(cfg, lin, 1, cfg.data.generations[0], Silent(), extra={"step_hook": KILL_CONTROLLER})
    assert [p for p in placement_group_table().values() if p["state"] != "REMOVED"] == []
    assert cleaners() == before
    assert lin.registry.load()["aliases"] == registry["aliases"]  # nothing half-done: no candidate, same champion
