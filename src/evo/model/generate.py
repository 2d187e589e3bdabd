"""Batched text generation: sampling options, stop strings, token counts (serving and evals)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evo.train.examples import prompt_ids


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None


@dataclass
class Output:
    text: str
    finish_reason: str  # "stop" (eos or a stop string) or "length"
    completion_tokens: int


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


@torch.no_grad()
def generate_batch(model, tok, prompts: list[str], sampling: Sampling, stops: list[str]) -> list[list[Output]]:
    """For each prompt, `sampling.n` completions. Greedy when temperature is 0."""
    ids = [prompt_ids(tok, p) for p in prompts]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for j, x in enumerate(ids):  # left padding
        input_ids[j, width - len(x):] = torch.tensor(x)
        mask[j, width - len(x):] = 1
    greedy = sampling.temperature == 0
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    out = model.generate(
        input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
        max_new_tokens=sampling.max_tokens, do_sample=not greedy,
        temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
        num_return_sequences=sampling.n, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )[:, width:].cpu()
    results: list[list[Output]] = [[] for _ in prompts]
    for row, seq in enumerate(out):
        ended = (seq == tok.eos_token_id).nonzero()
        n_tokens = int(ended[0]) + 1 if len(ended) else int((seq != tok.pad_token_id).sum())
        text, stopped = cut_at_stop(tok.decode(seq, skip_special_tokens=True), stops)
        finish = "stop" if stopped or len(ended) else "length"
        results[row // sampling.n].append(Output(text, finish, n_tokens))
    return results


def count_prompt_tokens(tok, prompt: str) -> int:
    return len(prompt_ids(tok, prompt))
