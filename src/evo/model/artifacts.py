"""Content-addressed model artifacts under `models/<sha>/`, verified whenever they are loaded.

A base model's sha covers its weights. An adapter's sha covers its parent's sha and its own
weights, so a sha names one whole model: the base plus every adapter on the way to it. Weights
are only ever read from safetensors; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from evo.atomic import atomic_write_json, read_json
from evo.errors import EvoError
from evo.storage import after_write_tree, ensure_tree, resolve

FORMAT_VERSION = 1
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class ModelIntegrityError(EvoError, RuntimeError):
    """A stored model whose weights no longer match its sha."""


def weights_sha(files: Iterable[Path], parent_sha: str = "") -> str:
    """sha256 over parent sha and every tensor's name, dtype, shape and bytes, in name order.

    Reads tensor by tensor, so a large model is never held in memory twice, and file metadata
    or shard boundaries do not change the hash.
    """
    h = hashlib.sha256(parent_sha.encode())
    handles = [safe_open(str(f), framework="pt") for f in files]
    keyed = sorted((k, i) for i, fh in enumerate(handles) for k in fh.keys())
    for key, i in keyed:
        t = handles[i].get_tensor(key).contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def safetensor_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelIntegrityError(f"{folder}: no .safetensors weights (evo loads safetensors only)")
    return files


class ModelStore:
    """Reads and writes `models/<sha>/` under a lineage root."""

    def __init__(self, root: str | Path):
        self.dir = resolve(root) / "models"

    def path(self, sha: str) -> Path:
        return self.dir / sha

    def meta(self, sha: str) -> dict[str, Any]:
        path = self.path(sha) / "meta.json"
        if not ensure_tree(self.path(sha)):  # a URI root: fetched into this node's mirror once
            raise FileNotFoundError(f"{path}: model {sha[:12]} is not in the store")
        meta = read_json(path)
        meta.setdefault("format_version", 1)  # artifacts written before versioning load as v1
        meta.setdefault("parent_sha", "")
        return meta

    def weights_dir(self, sha: str) -> Path:
        """Where the weights live: inside the store, or the source folder of a referenced base."""
        meta = self.meta(sha)
        return Path(meta["source"]) if meta.get("source") else self.path(sha)

    def _stage(self) -> Path:
        stage = self.dir / f".staging-{uuid.uuid4().hex[:12]}"
        stage.mkdir(parents=True)
        return stage

    def _commit(self, stage: Path, sha: str, meta: dict[str, Any]) -> str:
        meta = {**meta, "sha": sha, "format_version": FORMAT_VERSION, "created": time.time()}
        atomic_write_json(stage / "meta.json", meta)
        final = self.path(sha)
        if final.exists():  # same content already stored: keep the first, drop the copy
            shutil.rmtree(stage)
        else:
            stage.rename(final)

            after_write_tree(final)  # a URI root: uploaded, meta.json last
        return sha

    def put_base(self, save_fn, meta: dict[str, Any]) -> str:
        """Store a base model: `save_fn(folder)` writes it (save_pretrained of model and tokenizer)."""
        stage = self._stage()
        save_fn(stage)
        return self._commit(stage, weights_sha(safetensor_files(stage)), {**meta, "kind": "base"})

    def put_reference(self, source: str, meta: dict[str, Any]) -> str:
        """Register a base that stays where it is (a large user model); its sha still verifies."""
        sha = weights_sha(safetensor_files(Path(source)))
        stage = self._stage()
        return self._commit(stage, sha, {**meta, "kind": "base", "source": str(source)})

    def put_adapter(self, adapter_dir: Path, parent_sha: str, meta: dict[str, Any]) -> str:
        stage = self._stage()
        for name in ADAPTER_FILES:
            shutil.copy2(Path(adapter_dir) / name, stage / name)
        sha = weights_sha([stage / ADAPTER_FILES[0]], parent_sha)
        return self._commit(stage, sha, {**meta, "kind": "adapter", "parent_sha": parent_sha})

    def verify(self, sha: str) -> dict[str, Any]:
        meta = self.meta(sha)
        folder = self.weights_dir(sha)
        files = [folder / ADAPTER_FILES[0]] if meta["kind"] == "adapter" else safetensor_files(folder)
        actual = weights_sha(files, meta["parent_sha"] if meta["kind"] == "adapter" else "")
        if actual != sha:
            raise ModelIntegrityError(
                f"{folder}: weights hash to {actual[:12]}, not {sha[:12]}: the model was changed or corrupted"
            )
        return meta

    def chain(self, sha: str) -> list[str]:
        """[base sha, first adapter, ..., sha]."""
        out = [sha]
        while (parent := self.meta(out[-1])["parent_sha"]):
            out.append(parent)
        return out[::-1]

    def exists(self, sha: str) -> bool:
        return ensure_tree(self.path(sha))
