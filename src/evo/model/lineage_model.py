"""Materialize any generation as a plain Hugging Face model: base plus its adapters, merged.

A generation deep in a lineage is a chain of adapters on the base; merging them one by one on every
load (the trainer's parent, each eval task, export) costs a merge per ancestor, and its hashing a
hash per ancestor. So a merged model is kept, by sha and dtype, under `<root>/.merged/` (this node's
copy of the root, never uploaded: it is derived, and rebuilt from the chain when it is missing): a
load starts from the nearest cached model on the chain and merges only the links after it, and once
that is `MERGE_AFTER` links or more, the result is cached for the next load. The cache's entries are
verified like any stored model (a sha of their weights, checked when `verify`); the newest `KEEP` are
kept.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from peft import PeftModel

from evo.model.artifacts import ModelIntegrityError, ModelStore, safetensor_files, weights_sha
from evo.model.loading import load_causal_lm, load_tokenizer
from evo.storage import resolve

MERGE_AFTER = 2  # links merged on a load before its result is cached: a load merges at most this many
KEEP = 3  # merged models kept per root (each is one full model on disk)
STALE_S = 600  # an entry used this recently is not evicted (another process may be reading it)


def merged_dir(root: str | Path, sha: str, dtype: str) -> Path:
    return resolve(root) / ".merged" / f"{sha}-{dtype}"


def load_generation(root: str | Path, sha: str, dtype: str = "float32", verify: bool = True, cache: bool = True):
    """(model, tokenizer) for model `sha`, each link's sha (or the cached merge's) checked before its
    weights are used. `cache=False`: from the chain, as if there were no cache (neither read nor
    written). Merging an adapter draws random numbers (PEFT initializes each LoRA layer before it
    loads the weights) and a cache hit draws none: a caller that draws after the load seeds first
    (the trainer does, `evo.train.loop._load`)."""
    store = ModelStore(root)
    links = store.chain(sha)
    base_dir = str(store.weights_dir(links[0]))
    start, model = _nearest_cached(root, links, dtype, verify) if cache else (0, None)
    if model is None:
        start = 0
        if verify:
            store.verify(links[0])
        model = load_causal_lm(base_dir, dtype)
    rest = links[start + 1:]
    for link in rest:
        if verify:
            store.verify(link)
        model = PeftModel.from_pretrained(model, str(store.path(link))).merge_and_unload()
    if cache and verify and len(rest) >= MERGE_AFTER:  # only what was verified is kept for later (verified) loads
        _cache(root, sha, dtype, model)
    return model, load_tokenizer(base_dir)


def _nearest_cached(root, links: list[str], dtype: str, verify: bool):
    """(index on the chain, model) of the deepest cached merge of `links` (adapters only), or (0, None)."""
    for i in range(len(links) - 1, 0, -1):
        folder = merged_dir(root, links[i], dtype)
        if not (folder / "merged.json").exists():
            continue
        try:
            os.utime(folder)  # in use from now: another process's eviction leaves it for STALE_S
            if verify:
                want = json.loads((folder / "merged.json").read_text())["weights_sha"]
                if weights_sha(safetensor_files(folder)) != want:
                    raise ModelIntegrityError(f"{folder}: weights changed since they were cached")
            return i, load_causal_lm(str(folder), dtype)
        except Exception:  # evicted meanwhile, damaged, or not loadable: the chain is the truth
            shutil.rmtree(folder, ignore_errors=True)
    return 0, None


def _cache(root, sha: str, dtype: str, model) -> None:
    """Keep `model` (merged, for `sha`) for later loads; a failure to write loses only the speed-up."""
    final = merged_dir(root, sha, dtype)
    if final.exists():
        return
    stage = final.parent / f".staging-{uuid.uuid4().hex[:12]}"
    try:
        model.save_pretrained(str(stage), safe_serialization=True)
        (stage / "merged.json").write_text(json.dumps({"sha": sha, "dtype": dtype, "created": time.time(),
                                                       "weights_sha": weights_sha(safetensor_files(stage))}))
        try:
            stage.rename(final)
        except OSError:  # another process cached it first
            shutil.rmtree(stage, ignore_errors=True)
        _evict(final.parent)
    except Exception:  # a full disk, a damaged save: the load goes on without a copy
        pass
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _evict(folder: Path) -> None:
    """All but the `KEEP` newest entries, except one in use within `STALE_S`; and staging folders a
    killed process left (older than `STALE_S`)."""
    def age(p: Path) -> float:
        try:
            return time.time() - p.stat().st_mtime
        except OSError:  # removed meanwhile by another process
            return -1.0

    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=age)
    left = [p for p in folder.iterdir() if p.name.startswith(".staging-")]
    for p in entries[KEEP:] + left:
        if age(p) > STALE_S:
            shutil.rmtree(p, ignore_errors=True)
