"""Materialize any generation as a plain Hugging Face model: base plus its adapters, merged."""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel

from evo.model.artifacts import ModelStore
from evo.model.loading import load_causal_lm, load_tokenizer


def load_generation(root: str | Path, sha: str, dtype: str = "float32", verify: bool = True):
    """(model, tokenizer) for model `sha`, each link's sha checked before its weights are used."""
    store = ModelStore(root)
    links = store.chain(sha)
    for link in links if verify else ():
        store.verify(link)
    base_dir = str(store.weights_dir(links[0]))
    model = load_causal_lm(base_dir, dtype)
    for link in links[1:]:
        model = PeftModel.from_pretrained(model, str(store.path(link))).merge_and_unload()
    return model, load_tokenizer(base_dir)
