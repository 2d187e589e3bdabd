"""Model artifacts: content-addressed, verified on load, never unpickled."""

import json

import pytest
import torch
from safetensors.torch import save_file

from evo.model.artifacts import ModelIntegrityError, ModelStore, weights_sha


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(4, 3, generator=g), "b.bias": torch.randn(5, generator=g)}


def test_sha_ignores_file_layout_but_not_content_or_parent(tmp_path):
    t = tensors()
    save_file(t, str(tmp_path / "one.safetensors"))
    save_file({"a.weight": t["a.weight"]}, str(tmp_path / "s1.safetensors"))
    save_file({"b.bias": t["b.bias"]}, str(tmp_path / "s2.safetensors"), metadata={"x": "y"})
    one = weights_sha([tmp_path / "one.safetensors"])
    assert one == weights_sha([tmp_path / "s1.safetensors", tmp_path / "s2.safetensors"])
    assert one != weights_sha([tmp_path / "one.safetensors"], parent_sha="p")
    save_file(tensors(1), str(tmp_path / "other.safetensors"))
    assert one != weights_sha([tmp_path / "other.safetensors"])


def _base(store: ModelStore, seed=0) -> str:
    return store.put_base(lambda d: save_file(tensors(seed), str(d / "model.safetensors")), {"gen_id": "gen-0"})


def _adapter(tmp_path, store, parent) -> str:
    src = tmp_path / "adapter_src"
    src.mkdir(exist_ok=True)
    save_file({"lora_A": torch.ones(2, 2)}, str(src / "adapter_model.safetensors"))
    (src / "adapter_config.json").write_text("{}")
    return store.put_adapter(src, parent, {"gen_id": "gen-1"})


def test_store_chain_and_verify(tmp_path):
    store = ModelStore(tmp_path)
    base = _base(store)
    child = _adapter(tmp_path, store, base)
    assert store.chain(child) == [base, child]
    assert store.verify(child)["parent_sha"] == base and store.verify(base)["kind"] == "base"
    assert _base(store) == base  # the same weights again: same sha, stored once
    assert not list((tmp_path / "models").glob(".staging-*"))


def test_tampered_weights_fail_verification(tmp_path):
    store = ModelStore(tmp_path)
    base = _base(store)
    child = _adapter(tmp_path, store, base)
    f = store.path(child) / "adapter_model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF  # flip bits in the last tensor's data
    f.write_bytes(bytes(raw))
    with pytest.raises(ModelIntegrityError, match="corrupted"):
        store.verify(child)


def test_loading_a_tampered_generation_is_refused(tmp_path):
    from evo.model.lineage_model import load_generation

    store = ModelStore(tmp_path)
    base = _base(store)
    save_file(tensors(2), str(store.path(base) / "model.safetensors"))
    with pytest.raises(ModelIntegrityError, match=base[:12]):
        load_generation(tmp_path, base)


def test_pickled_weights_are_not_accepted(tmp_path):
    (tmp_path / "m").mkdir()
    torch.save(tensors(), tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(ModelIntegrityError, match="safetensors only"):
        ModelStore(tmp_path).put_reference(str(tmp_path / "m"), {})


def test_meta_written_by_an_older_version_loads(tmp_path):
    store = ModelStore(tmp_path)
    base = _base(store)
    p = store.path(base) / "meta.json"
    p.write_text(json.dumps({"kind": "base", "sha": base}))
    meta = store.meta(base)
    assert meta["format_version"] == 1 and meta["parent_sha"] == ""
