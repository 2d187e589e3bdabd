"""Batched text generation: sampling options, stop strings, token counts (serving and evals)."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

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
    token_ids: list[int] = field(default_factory=list)  # the tokens `text` is made of (`sample_ids` only)
    eos: bool = False  # it ended with the end token (not counted in token_ids; `sample_ids` only)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def generate_batch(model, tok, prompts: list[str], sampling: Sampling, stops: list[str]) -> list[list[Output]]:
    """For each prompt, `sampling.n` completions. Greedy when temperature is 0."""
    return generate_ids(model, tok, [prompt_ids(tok, p) for p in prompts], sampling, stops)


def _left_padded(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Token id rows left-padded to the longest: (input ids, attention mask, width)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for j, x in enumerate(ids):
        input_ids[j, width - len(x):] = torch.tensor(x)
        mask[j, width - len(x):] = 1
    return input_ids, mask, width


@torch.no_grad()
def generate_ids(model, tok, ids: list[list[int]], sampling: Sampling, stops: list[str]) -> list[list[Output]]:
    """`generate_batch` for prompts already tokenized (`prompt_ids`): a caller that also counts the
    prompt's tokens counts the ids it generated from."""
    input_ids, mask, width = _left_padded(ids, tok.pad_token_id)
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
    """`stream_one` for a prompt already tokenized (`prompt_ids`). It samples as `sample_ids` does
    (its own generator, seeded from `sampling.seed`): a seeded stream is that request's first answer."""
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
                               stopping_criteria=StoppingCriteriaList([_Halt()]),
                               **_serve_kwargs(tok, sampling, [choice_seed(sampling.seed, 0)]))
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


# -- serving: each answer samples from its own generator ------------------------------------------

def choice_seed(seed: int | None, choice: int) -> int:
    """The generator seed of choice `choice` of a request with `seed` (None: a fresh random one), so
    a seeded request's n answers differ from one another and repeat from one request to the next."""
    if seed is None:
        return secrets.randbits(63)
    return int.from_bytes(hashlib.sha256(f"{seed}:{choice}".encode()).digest()[:8], "big") >> 1


class RowSampler:
    """A logits processor that samples each row's next token with that row's own torch.Generator
    (temperature, then top-p, as OpenAI's sampling defines them) and leaves only it possible, so
    `generate` run greedily takes it. Each row's draw depends on its own logits and generator alone:
    the requests batched beside it, and other threads sampling meanwhile, do not move it."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        probs = torch.softmax(scores.float().cpu() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            ordered, order = probs.sort(dim=-1, descending=True)
            before = ordered.cumsum(dim=-1) - ordered  # the mass of the tokens ranked above each one
            ordered[before >= self.top_p] = 0.0  # the smallest set whose mass reaches top_p stays
            probs = torch.zeros_like(probs).scatter(-1, order, ordered)
        picked = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, picked.to(scores.device), 0.0)


def _serve_kwargs(tok, sampling: Sampling, seeds: list[int]) -> dict:
    kw = {"max_new_tokens": sampling.max_tokens, "do_sample": False, "temperature": None, "top_p": None,
          "top_k": None, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    if sampling.temperature > 0:
        from transformers import LogitsProcessorList

        kw["logits_processor"] = LogitsProcessorList([RowSampler(seeds, sampling.temperature, sampling.top_p)])
    return kw


def _text_tokens(tok, seq: list[int], text: str) -> list[int]:
    """The shortest head of `seq` whose text covers `text` (the answer, cut at a stop string)."""
    for k in range(len(seq) + 1):
        if len(tok.decode(seq[:k], skip_special_tokens=True)) >= len(text):
            return seq[:k]
    return seq


@torch.no_grad()
def sample_ids(model, tok, ids: list[list[int]], sampling: Sampling, stops: list[str],
               seeds: list[int | None]) -> list[list[Output]]:
    """Serving's `generate_ids`: prompt i's `sampling.n` answers are drawn with generators seeded
    from `seeds[i]` (`choice_seed`), so a seeded request gets the same answers alone or batched with
    others, and its n answers are n draws. Each Output also names its tokens (for logprobs)."""
    if sampling.max_tokens == 0:  # echo only (completions with max_tokens 0)
        return [[Output("", "length", 0, []) for _ in range(sampling.n)] for _ in ids]
    copies = 1 if sampling.temperature == 0 else sampling.n  # greedy: the n answers are one answer n times
    rows = [x for x in ids for _ in range(copies)]
    row_seeds = [choice_seed(seed, j) for seed in seeds for j in range(copies)]
    input_ids, mask, width = _left_padded(rows, tok.pad_token_id)
    out = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                         **_serve_kwargs(tok, sampling, row_seeds))[:, width:].cpu()
    out = out.repeat_interleave(sampling.n // copies, dim=0)
    results: list[list[Output]] = [[] for _ in ids]
    for row, seq in enumerate(out):
        ended = (seq == tok.eos_token_id).nonzero()
        n_tokens = int(ended[0]) + 1 if len(ended) else int((seq != tok.pad_token_id).sum())
        kept = seq[: int(ended[0])] if len(ended) else seq[:n_tokens]
        text, stopped = cut_at_stop(tok.decode(kept, skip_special_tokens=True), stops)
        finish = "stop" if stopped or len(ended) else "length"
        results[row // sampling.n].append(Output(text, finish, n_tokens, _text_tokens(tok, kept.tolist(), text),
                                                 bool(len(ended)) and not stopped))
    return results


@torch.no_grad()
def token_logprobs(model, ids: list[int], start: int, top: int) -> list[tuple[float | None, list[tuple[int, float]]]]:
    """For each position p from `start` on: the log-probability the model gave token ids[p] after
    ids[:p] (None at position 0, which follows nothing) and its `top` likeliest tokens there, as
    (token id, log-probability), likeliest first. One forward pass over `ids`."""
    if start >= len(ids):
        return []
    x = torch.tensor([ids], device=model.device)
    logp = torch.log_softmax(model(input_ids=x).logits[0].float().cpu(), dim=-1)
    out: list[tuple[float | None, list[tuple[int, float]]]] = []
    for p in range(start, len(ids)):
        if p == 0:
            out.append((None, []))
            continue
        row = logp[p - 1]
        best = torch.topk(row, top) if top else None
        out.append((float(row[ids[p]]),
                    [(int(i), float(v)) for v, i in zip(best.values, best.indices)] if best is not None else []))
    return out
