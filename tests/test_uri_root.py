"""A lineage root given as a URI (file:// here; s3:// and gs:// go through the same pyarrow.fs code):
every process works in its own local mirror and moves whole files to and from the URI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evo import storage
from evo.atomic import atomic_write_json, read_json

pytestmark = pytest.mark.integration


@pytest.fixture()
def fresh_mirrors():
    saved = dict(storage._MIRRORS)
    storage._MIRRORS.clear()
    yield
    storage._MIRRORS.clear()
    storage._MIRRORS.update(saved)


def test_writes_upload_whole_files_and_reads_fetch_them(tmp_path, fresh_mirrors):
    remote_dir = tmp_path / "bucket" / "lineage"
    uri = f"file://{remote_dir}"
    a = storage.resolve(uri, tmp_path / "cache-a")
    assert a.parent == (tmp_path / "cache-a").resolve() and storage.is_uri(uri)
    atomic_write_json(a / "registry.json", {"aliases": {"champion": "abc"}})
    assert json.loads((remote_dir / "registry.json").read_text())["aliases"]["champion"] == "abc"
    (a / "models" / "s1").mkdir(parents=True)
    (a / "models" / "s1" / "w.safetensors").write_bytes(b"weights")
    (a / "models" / "s1" / "meta.json").write_text("{}")
    storage.after_write_tree(a / "models" / "s1")
    assert sorted(p.name for p in (remote_dir / "models" / "s1").iterdir()) == ["meta.json", "w.safetensors"]
    assert not list(remote_dir.rglob("*.tmp"))  # temp objects were moved into place

    # another node: an empty mirror; opening the root fetches mutable state, models only when needed
    storage._MIRRORS.clear()
    b = storage.resolve(uri, tmp_path / "cache-b")
    assert storage.remote_for(b).pull_state() == 1
    assert read_json(b / "registry.json")["aliases"]["champion"] == "abc"
    assert not (b / "models").exists()
    assert storage.ensure_tree(b / "models" / "s1")
    assert (b / "models" / "s1" / "w.safetensors").read_bytes() == b"weights"
    assert not storage.ensure_tree(b / "models" / "nope") and not storage.ensure(b / "data" / "nope.parquet")
    assert storage.uri_of(b / "runs" / "x.parquet") == f"{uri}/runs/x.parquet"
    assert storage.uri_of(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")  # not in a mirror: a path
    with pytest.raises(FileNotFoundError, match="no such file"):
        storage.local_file(f"{uri}/runs/missing.parquet", uri)


def test_a_bad_uri_names_the_root(tmp_path):
    with pytest.raises(storage.StorageError, match="nosuchscheme://x: cannot open it"):
        storage.resolve("nosuchscheme://x", tmp_path)


def test_generations_on_a_uri_root_and_resumed_from_another_mirror(ray_cluster, demo_dir, tmp_path, fresh_mirrors):
    """Generation 0 and 1 with the root at a file:// URI: the Ray Train workers and eval tasks read
    the models and data through their own mirror (EVO_CACHE of the cluster), Ray Train's checkpoints
    go to the URI, and a fresh mirror (another machine) sees the whole lineage and resumes."""
    from evo.driver import Lineage, run
    from evo.progress import Silent
    from tests.conftest import tiny_config

    remote_dir = tmp_path / "bucket" / "lineage"
    uri = f"file://{remote_dir}"
    cfg = tiny_config(demo_dir, "data.generations=[" + str(demo_dir / "gen1.jsonl") + "]",
                      "gate.min_recall=null", "gate.min_generalization=null", "gate.max_style_drift=null")
    driver_cache = tmp_path / "driver-cache"
    storage.resolve(uri, driver_cache)  # this process's mirror (the cluster's workers use their own)
    summary = run(cfg, uri, Silent())
    assert [r["GEN_ID"] for r in summary.generations] == ["gen-0", "gen-1"]
    rows = (remote_dir / "ledger.csv").read_text().splitlines()
    assert len(rows) == 3
    reg = json.loads((remote_dir / "registry.json").read_text())
    for sha in reg["models"]:
        assert (remote_dir / "models" / sha / "meta.json").exists()
    assert len(list((remote_dir / "data").glob("*.parquet"))) == 2
    assert (remote_dir / "runs" / "gen-1" / "decision.json").exists()
    assert (remote_dir / "evals" / "gen-1.json").exists()
    assert list((remote_dir / "runs" / "ray").rglob("checkpoint_*"))  # Ray Train wrote to the URI
    (worker_mirror,) = Path(os.environ["EVO_WORKER_CACHE"]).iterdir()  # the workers' own mirror of the URI
    assert (worker_mirror / "models" / reg["aliases"]["champion"]).exists() or \
        (worker_mirror / "models" / summary.generations[0]["child_sha"] / "meta.json").exists()
    assert worker_mirror != storage.resolve(uri)

    # another machine: an empty mirror; the CLI reads the ledger from the URI, and a rerun resumes
    env = {**os.environ, "EVO_CACHE": str(tmp_path / "other-cache")}
    out = subprocess.run([sys.executable, "-m", "evo.cli", "ledger", "--root", uri], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line.split()[0] for line in out.stdout.splitlines()[1:3]] == ["gen-0", "gen-1"]
    storage._MIRRORS.clear()
    storage.resolve(uri, tmp_path / "third-cache")
    again = run(cfg, uri, Silent())
    assert [r["GEN_ID"] for r in again.generations] == ["gen-0", "gen-1"]
    assert (remote_dir / "ledger.csv").read_text().splitlines() == rows
    Lineage(uri).models.verify(reg["aliases"]["champion"])  # fetched into the third mirror and verified
