"""Batched greedy generation and exact-match scoring."""

from __future__ import annotations

import torch

from evo.train.examples import prompt_ids


def normalize(text: str) -> str:
    return " ".join(text.split())


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions of `prompts`, left-padded in batches of `batch_size`."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        ids = [prompt_ids(tokenizer, p) for p in prompts[i : i + batch_size]]
        n = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), n), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.long)
        for j, x in enumerate(ids):  # left padding: every prompt ends where generation starts
            input_ids[j, n - len(x) :] = torch.tensor(x)
            mask[j, n - len(x) :] = 1
        gen = model.generate(
            input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out.extend(tokenizer.batch_decode(gen[:, n:].cpu(), skip_special_tokens=True))
    return out
