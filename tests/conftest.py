"""Fixtures: the demo data, the session's shared local Ray cluster, and the session's read-only lineage
roots (built once); the hooks that run the modules sharing the cluster one after another and shut it
down before a module that starts Ray of its own (tests/helpers/shared_cluster.py). What tests share
besides fixtures is in `tests/helpers`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before anything imports Ray; see evo.ray_start

from evo.testing.clusters import generous_start_waits, use_private_token  # noqa: E402

# Every cluster of the session (in-process, `ray start`, `evo demo`'s own) shares one token kept in a
# temp file: none depends on ~/.ray/auth_token existing, which on a fresh machine it does not.
use_private_token()
generous_start_waits()
# torch's JIT-built extensions go to a folder of the session's own, empty as on a fresh machine: a
# build (DeepSpeed's kernels) is paid by the test that causes it, never reused from an earlier session.
os.environ["TORCH_EXTENSIONS_DIR"] = tempfile.mkdtemp(prefix="evo-torch-extensions-")

from evo.data.demo import write_demo_data  # noqa: E402  (after the token: importing Ray reads it)
from tests.helpers import LOOSE_GATE, copy_root, ensure_base, tiny_config  # noqa: E402
from tests.helpers.shared_cluster import (  # noqa: E402
    SharedCluster,
    order_modules,
    sharing_modules,
    starts_its_own,
)

_CLUSTER = SharedCluster()
_SHARING: set[str] = set()


def pytest_collection_modifyitems(session, config, items):
    items[:] = order_modules(items)
    _SHARING.clear()
    _SHARING.update(sharing_modules(items))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if starts_its_own(item, _SHARING):  # before its fixtures start a cluster of their own
        _CLUSTER.down()


def pytest_sessionfinish(session, exitstatus):
    _CLUSTER.down()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo_data")
    write_demo_data(folder, generations=2)
    return folder


@pytest.fixture(scope="session")
def _worker_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("worker-cache"))


@pytest.fixture(scope="module")
def ray_cluster(_worker_cache):
    """The session's local Ray cluster (never a stray one): started by the first module that asks,
    kept up for the next, shut down before a module that starts its own and at the end. Its workers
    keep mirrors of URI lineage roots in their own cache folder ($EVO_WORKER_CACHE here), as another
    machine would."""
    return _CLUSTER.up(_worker_cache)


@pytest.fixture(scope="module")
def ray_jobs(ray_cluster):
    """The Jobs API of the shared cluster's dashboard (where `evo serve` submits jobs by default)."""
    from evo.testing.local_head import JobsAPI

    return JobsAPI(_CLUSTER.dashboard, use_private_token())


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
    by `evo.driver.run` with tracking in the embedded MLflow store; read-only like `base_root`."""
    from evo.driver import run
    from evo.progress import Silent

    if "two" not in _base_cache:
        root = copy_root(base_root, _base_cache["folder"].parent / "two-generations")
        run(tiny_config(demo_dir, *LOOSE_GATE, "tracking.backend=embedded"), root, Silent())  # tests/pipelines/test_tracking.py
        _base_cache["two"] = root
    return _base_cache["two"]
