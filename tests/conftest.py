"""Fixtures: the demo data, one local Ray cluster per integration module, and the session's read-only
lineage roots (built once). What tests share besides fixtures is in `tests/helpers`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before anything imports Ray; see evo.ray_start

from evo.testing.clusters import generous_start_waits, start_patiently, use_private_token  # noqa: E402

# Every cluster of the session (in-process, `ray start`, `evo demo`'s own) shares one token kept in a
# temp file: none depends on ~/.ray/auth_token existing, which on a fresh machine it does not.
use_private_token()
generous_start_waits()

from evo.data.demo import write_demo_data  # noqa: E402  (after the token: importing Ray reads it)
from tests.helpers import LOOSE_GATE, copy_root, ensure_base, tiny_config  # noqa: E402


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo_data")
    write_demo_data(folder, generations=2)
    return folder


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster (never a stray one), shut down at the end of the module. Its workers keep
    mirrors of URI lineage roots in their own cache folder ($EVO_WORKER_CACHE here), as another
    machine would."""
    import ray

    from evo.ray_start import WORKER_ENV

    cache = str(tmp_path_factory.mktemp("worker-cache"))
    os.environ["EVO_WORKER_CACHE"] = cache
    start_patiently(lambda: ray.init(address="local", num_cpus=3,
                                     runtime_env={"env_vars": {**WORKER_ENV, "EVO_CACHE": cache}}),
                    "a local Ray cluster for the tests", cleanup=ray.shutdown)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def _base_cache(tmp_path_factory) -> dict:
    return {"folder": tmp_path_factory.mktemp("base") / "lineage"}


@pytest.fixture(scope="module")
def base_root(ray_cluster, demo_dir, _base_cache) -> Path:
    """A lineage root holding only the tiny generation 0, built once per session (on whichever
    cluster asks first) and never written to: tests copy it (`copy_root`)."""
    return ensure_base(demo_dir, _base_cache)


@pytest.fixture(scope="module")
def two_generations_root(base_root, demo_dir, _base_cache) -> Path:
    """Generation 0 plus generations 1 and 2 of the tiny demo (DDP, gate off), run once per session
    by `evo.driver.run`; read-only like `base_root`."""
    from evo.driver import run
    from evo.progress import Silent

    if "two" not in _base_cache:
        root = copy_root(base_root, _base_cache["folder"].parent / "two-generations")
        run(tiny_config(demo_dir, *LOOSE_GATE), root, Silent())
        _base_cache["two"] = root
    return _base_cache["two"]
