"""Shared fixtures: a tiny demo config, and one local Ray cluster per integration module."""

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

from evo.config import load_config  # noqa: E402  (after the token: importing Ray reads it)
from evo.data.demo import write_demo_data  # noqa: E402

# A model small enough that a generation trains in about a second on 2 CPU cores.
TINY = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=128", "model.tiny.vocab_size=320", "model.max_length=48",
    "model.pretrain.steps=30", "model.pretrain.batch_size=16", "model.pretrain.lr=0.005",
    "train.steps=20", "train.checkpoint_every=10", "train.batch_size=8", "train.replay_k=20",
    "train.max_failures=1", "eval.max_items=24", "eval.max_new_tokens=12",
]
LOOSE_GATE = ["gate.min_recall=null", "gate.min_generalization=null", "gate.max_style_drift=null"]


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo_data")
    write_demo_data(folder, generations=2)
    return folder


def tiny_config(demo_dir: Path, *extra: str):
    return load_config(demo_dir / "demo.yaml", TINY + list(extra))


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


def ensure_base(demo_dir: Path, cache: dict) -> Path:
    """The session's tiny generation 0 (see `base_root`), built on the Ray cluster this process is
    connected to if it is not built yet."""
    from evo.driver import generation_zero
    from evo.lineage.root import Lineage
    from evo.progress import Silent

    root = cache["folder"]
    if not cache.get("built"):
        generation_zero(tiny_config(demo_dir), Lineage(root), Silent())
        cache["built"] = True
    return root


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


def copy_root(base_root: Path, dest: Path) -> Path:
    """A lineage root of its own for a test: generation 0 copied from `base_root` to `dest`/lineage
    (a folder; for a URI root, copy to the folder the URI names)."""
    import shutil

    dst = dest / "lineage"
    shutil.copytree(base_root, dst)
    return dst
