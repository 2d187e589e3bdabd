"""Greedy generation for the evals (the serving engine's batched generate at temperature 0)."""

from __future__ import annotations

from evo.model.generate import Sampling, generate_batch


def normalize(text: str) -> str:
    return " ".join(text.split())


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions of `prompts`, in batches of `batch_size`."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        batch = generate_batch(model, tokenizer, prompts[i : i + batch_size], Sampling(max_new_tokens, 0.0), [])
        out.extend(o[0].text for o in batch)
    return out
