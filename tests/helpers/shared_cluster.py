"""One local Ray cluster for every integration module that can share it: the modules whose tests use
the `ray_cluster` fixture. The first of them starts it, the next ones find it up, and it is shut down
before a module that starts Ray of its own (a process is connected to one cluster at a time, and two
clusters would share 2 cores) and at the end of the session. `order_modules` runs the sharing modules
one after another, so that the cluster starts once a session instead of once a module (6-9 s each).

A module's test may leave nothing on the cluster that the next module would see: Serve shut down,
placement groups removed (evo removes what a step left; `test_sweep` checks that none is left)."""

from __future__ import annotations

import os
from typing import Optional

import pytest

from evo.testing.clusters import start_patiently

SHARED = "ray_cluster"  # the fixture that names the shared cluster


class SharedCluster:
    """The session's shared cluster: 3 CPUs, workers with evo's runtime environment, their mirrors of URI lineage roots
    in `cache` ($EVO_WORKER_CACHE and the workers' $EVO_CACHE), as another machine would keep them."""

    def __init__(self) -> None:
        self.address: Optional[str] = None
        self.dashboard: Optional[str] = None  # its dashboard's URL: the Jobs API that `evo serve` uses by default
        self.starts = 0

    def up(self, cache: str) -> str:
        import ray

        from evo.ray_start import LOCAL_SYSTEM_CONFIG, one_machine, runtime_env

        if self.address is not None and ray.is_initialized() and ray.get_runtime_context().gcs_address == self.address:
            return self.address
        if ray.is_initialized():  # connected to another cluster that a module left behind
            ray.shutdown()
        os.environ["EVO_WORKER_CACHE"] = cache
        one_machine()  # as `evo` starts a local cluster (evo.ray_start.start_ray)
        # evo's runtime environment (evo.ray_start.runtime_env): WORKER_ENV, and the setup hook that names the
        # cluster in every worker, so Ray's helpers inside it find this one beside another Ray instance (test_sweep)
        ctx = start_patiently(lambda: ray.init(address="local", num_cpus=3, include_dashboard=True,
                                               runtime_env=runtime_env({"EVO_CACHE": cache}),
                                               # as start_ray's: idle eval workers outlive a Ray Train run
                                               _system_config=LOCAL_SYSTEM_CONFIG),
                              "a local Ray cluster for the tests", cleanup=ray.shutdown)
        self.address = ray.get_runtime_context().gcs_address
        self.dashboard = f"http://{ctx.dashboard_url}"
        self.starts += 1
        return self.address

    def down(self) -> None:
        if self.address is None:
            return
        import ray

        if ray.is_initialized() and ray.get_runtime_context().gcs_address == self.address:
            ray.shutdown()
        self.address = self.dashboard = None


def _uses_shared(item: pytest.Item) -> bool:
    return SHARED in getattr(item, "fixturenames", ())


def _is_integration(item: pytest.Item) -> bool:
    return item.get_closest_marker("integration") is not None


def sharing_modules(items: list[pytest.Item]) -> set[str]:
    """The modules (their node ids) with a test that uses the shared cluster."""
    return {item.nodeid.split("::")[0] for item in items if _uses_shared(item)}


def order_modules(items: list[pytest.Item]) -> list[pytest.Item]:
    """The tests that start no Ray first, then the modules that share the cluster, then the modules
    that start their own; each module's tests stay together and in their order."""
    sharing = sharing_modules(items)
    own = {item.nodeid.split("::")[0] for item in items if _is_integration(item)} - sharing

    def group(item: pytest.Item) -> int:
        module = item.nodeid.split("::")[0]
        return 1 if module in sharing else 2 if module in own else 0

    return sorted(items, key=group)  # stable: the collection's order within a group


def starts_its_own(item: pytest.Item, sharing: set[str]) -> bool:
    """An integration test of a module that does not share the cluster: it starts Ray of its own."""
    return _is_integration(item) and item.nodeid.split("::")[0] not in sharing
