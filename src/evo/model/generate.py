"""Batched text generation: sampling options, stop strings, token counts (serving and evals)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from evo.model.prompts import prompt_ids


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


def generate_batch(model, tok, prompts: list[str], sampling: Sampling, stops: list[str]) -> list[list[Output]]:
    """For each prompt, `sampling.n` completions. Greedy when temperature is 0."""
    return generate_ids(model, tok, [prompt_ids(tok, p) for p in prompts], sampling, stops)


@torch.no_grad()
def generate_ids(model, tok, ids: list[list[int]], sampling: Sampling, stops: list[str]) -> list[list[Output]]:
    """`generate_batch` for prompts already tokenized (`prompt_ids`): a caller that also counts the
    prompt's tokens counts the ids it generated from."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for j, x in enumerate(ids):  # left padding
        input_ids[j, width - len(x):] = torch.tensor(x)
        mask[j, width - len(x):] = 1
    copies = 1 if sampling.temperature == 0 else sampling.n  # greedy: the n answers are one answer n times
    out = model.generate(
        input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
        num_return_sequences=copies, **_generate_kwargs(tok, sampling),
    )[:, width:].cpu().repeat_interleave(sampling.n // copies, dim=0)
    results: list[list[Output]] = [[] for _ in ids]
    for row, seq in enumerate(out):
        ended = (seq == tok.eos_token_id).nonzero()
        n_tokens = int(ended[0]) + 1 if len(ended) else int((seq != tok.pad_token_id).sum())
        text, stopped = cut_at_stop(tok.decode(seq, skip_special_tokens=True), stops)
        finish = "stop" if stopped or len(ended) else "length"
        results[row // sampling.n].append(Output(text, finish, n_tokens))
    return results


def _generate_kwargs(tok, sampling: Sampling) -> dict:
    is_greedy = sampling.temperature == 0
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    return {"max_new_tokens": sampling.max_tokens, "do_sample": not is_greedy,
            "temperature": None if is_greedy else sampling.temperature, "top_p": None if is_greedy else sampling.top_p,
            "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}


@dataclass
class Delta:
    text: str  # new text since the previous delta ("" on the last one)
    finish_reason: str | None = None  # set on the last delta only
    completion_tokens: int = 0


def stream_one(model, tok, prompt: str, sampling: Sampling, stops: list[str]) -> Iterator[Delta]:
    """One completion, yielded as text arrives. Text that could be the start of a stop string is
    held back until it is known not to be one, so no client ever sees part of a stop string."""
    return stream_ids(model, tok, prompt_ids(tok, prompt), sampling, stops)


def stream_ids(model, tok, prompt: list[int], sampling: Sampling, stops: list[str]) -> Iterator[Delta]:
    """`stream_one` for a prompt already tokenized (`prompt_ids`)."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    ids = torch.tensor([prompt], device=model.device)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
    halt = threading.Event()
    counted = {"n": 0}

    class _Halt(StoppingCriteria):  # the consumer saw a stop string (or went away): stop generating
        def __call__(self, input_ids, scores, **kw):
            counted["n"] = input_ids.shape[1] - ids.shape[1]
            return halt.is_set()

    failure: list[BaseException] = []

    def work():
        try:
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                               stopping_criteria=StoppingCriteriaList([_Halt()]), **_generate_kwargs(tok, sampling))
        except BaseException as e:  # surfaced to the consumer below
            failure.append(e)
            streamer.on_finalized_text("", stream_end=True)

    thread = threading.Thread(target=work, name="evo-stream", daemon=True)
    thread.start()
    text, sent, stopped = "", 0, False
    hold = max((len(s) for s in stops), default=1) - 1
    try:
        for piece in streamer:
            text += piece
            cut, stopped = cut_at_stop(text, stops)
            safe = len(cut) if stopped else max(sent, len(text) - hold)
            if safe > sent:
                yield Delta(text[sent:safe])
                sent = safe
            if stopped:
                halt.set()
                break
    finally:
        halt.set()
        thread.join()
    if failure:
        raise failure[0]
    if not stopped and len(text) > sent:
        yield Delta(text[sent:])
    n = max(counted["n"], 1)
    finish = "stop" if stopped or n < sampling.max_tokens else "length"
    yield Delta("", finish, n)


def greedy(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions of `prompts`, in batches of `batch_size` (the evals' and curation's answers)."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        batch = generate_batch(model, tokenizer, prompts[i : i + batch_size], Sampling(max_new_tokens, 0.0), [])
        out.extend(o[0].text for o in batch)
    return out
