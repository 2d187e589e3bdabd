"""A lineage root given as a URI (file:// here; s3:// and gs:// go through the same pyarrow.fs code):
every process works in its own local mirror and moves whole files to and from the URI. The end-to-end
run on a URI root is in test_integration; a sweep on one in test_sweep (PBT)."""

from __future__ import annotations

import json

import pytest

from evo import storage
from evo.atomic import atomic_write_json, read_json


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
    with pytest.raises(FileNotFoundError, match="no such folder"):
        storage.local_tree(f"{uri}/runs/gen-0/init", uri)
    assert storage.local_tree(f"{uri}/models/s1", uri) == str(b / "models" / "s1")
    with pytest.raises(storage.StorageError, match="not under the lineage root"):
        storage.local_file("s3://elsewhere/x.parquet", uri)


def test_a_bad_uri_names_the_root(tmp_path):
    with pytest.raises(storage.StorageError, match="nosuchscheme://x: cannot open it"):
        storage.resolve("nosuchscheme://x", tmp_path)
