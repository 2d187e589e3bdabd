"""What a real pretrained base brings and a fine-tune can lose: general ability, words, variety.

Three families, each child against the base (generation 0) or its parent, on sets no delta touches:

- general ability kept: questions of general knowledge, asked as chats, and scored only on those the
  base answers correctly (a lost answer is a forgotten one; the base scores 1.0 there by construction,
  which is not a statement about the base); and the mean per-token KL divergence of the model's
  next-token distribution from the base's, along the base's own answers to the same questions;
- degeneration: the share of generated words, in the answers to the questions and to the open
  prompts, that are neither dictionary words (`wordfreq`) nor words of the lineage's own data (the
  "fake words" an overtrained fine-tune invents: "a deep shade ofpulumi");
- diversity: distinct-1 and distinct-2 (unique word uni- and bigrams over all replies, divided by
  their count) and a repetition rate (the share of a reply's word trigrams that repeat an earlier one
  of the same reply), on open prompts answered greedily.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

from evo.data.ingest import json_lines
from evo.model.generate import greedy
from evo.model.prompts import prompt_ids, reply_prompt

# torch, the tokenizer-side helpers and generation are imported where a model is scored, so that the
# file checks (`read_questions`, `read_prompts`) run before anything heavy loads (evo.inputs)

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


@dataclass(frozen=True)
class Question:
    prompt: str  # asked as the user turn of a chat
    answers: tuple[str, ...]  # any of them, as a whole word or phrase, case-insensitive, is correct

    def correct(self, reply: str) -> bool:
        # a whole word or number: "0" is not found in "-18.0", nor "60" in "240"
        return any(re.search(rf"(?<![\w.,-]){re.escape(a)}(?![\w]|[.,]\d)", reply, re.IGNORECASE)
                   for a in self.answers)


@dataclass
class GeneralSpec:
    """What to score on; plain data so it ships to a Ray task."""

    base_sha: str  # generation 0: the reference of the KL and of which questions count
    questions: list[Question]
    open_prompts: list[str]
    domain_words: frozenset[str]  # lower-case words of the lineage's data: not fake
    language: str = "en"  # wordfreq's language code
    max_new_tokens: int = 40


@dataclass
class GeneralResult:
    accuracy: Optional[float]  # on the questions the base answers correctly; None if it answers none
    correct: int
    counted: int  # questions the base answers correctly
    asked: int
    kl_to_base: float  # mean per-token KL(base || model), nats, along the base's answers
    kl_tokens: int
    fake_word_share: float
    words: int
    fake_words: list[str]  # a few, for the report
    distinct1: float
    distinct2: float
    repetition: float
    lost: list[dict] = field(default_factory=list)  # a few questions the base answered and this model did not
    samples: list[dict] = field(default_factory=list)  # a few open replies, for the report
    bigrams: int = 0  # word bigrams of the open replies: distinct-2's n, for the gate's noise allowance
    trigrams: int = 0  # word trigrams of the open replies: the repetition rate's n


def read_questions(path: str | Path) -> list[Question]:
    """JSONL of {"prompt": str, "answers": [str, ...]} (or "answer": str)."""
    out = []
    for n, obj in json_lines(path):
        answers = obj.get("answers", [obj["answer"]] if isinstance(obj.get("answer"), str) else None) \
            if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not answers \
                or not all(isinstance(a, str) and a.strip() for a in answers):
            raise ValueError(f"{path}:{n}: a general question needs 'prompt' (string) and 'answers' "
                             "(a list of non-empty strings)")
        out.append(Question(obj["prompt"], tuple(answers)))
    return out


def read_prompts(path: str | Path) -> list[str]:
    """JSONL of {"prompt": str}."""
    out = []
    for n, obj in json_lines(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise ValueError(f"{path}:{n}: an open prompt needs 'prompt' (a non-empty string)")
        out.append(obj["prompt"])
    return out


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """The lower-case words of `texts` (a lineage's data: its invented names are not fake words)."""
    return frozenset(w for t in texts for w in words(t))


@lru_cache(maxsize=200_000)
def _known(word: str, language: str) -> bool:
    from wordfreq import zipf_frequency

    return zipf_frequency(word, language) > 0


def fake_words(replies: list[str], domain: frozenset[str], language: str = "en") -> tuple[int, list[str]]:
    """(words in all replies, the ones neither in the dictionary nor in `domain`)."""
    every = [w for r in replies for w in words(r)]
    return len(every), [w for w in every if w not in domain and not _known(w, language)]


def ngrams(replies: list[str], n: int) -> list[tuple[str, ...]]:
    """Every word n-gram of every reply (none across two replies)."""
    return [tuple(ws[i: i + n]) for r in replies for ws in [words(r)] for i in range(len(ws) - n + 1)]


def distinct(replies: list[str], n: int) -> float:
    """Unique word n-grams over all replies, divided by their count (0 when there are none)."""
    grams = ngrams(replies, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(replies: list[str], n: int = 3) -> float:
    """The share of word n-grams that repeat an earlier n-gram of the same reply."""
    repeated = total = 0
    for r in replies:
        ws, seen = words(r), set()
        for i in range(len(ws) - n + 1):
            g = tuple(ws[i: i + n])
            repeated += g in seen
            total += 1
            seen.add(g)
    return repeated / total if total else 0.0


def chat_prompt(tok, question: str) -> str:
    """A question as the user turn, through the tokenizer's chat template where it has one."""

    return reply_prompt([{"role": "user", "content": question}], tok)


def mean_kl(model, base, tok, prompts: list[str], answers: list[str]) -> tuple[float, int]:
    """Mean over the answer tokens of KL(base || model) of the next-token distributions, teacher-forced
    along `answers` (the base's own). Returns (mean in nats, tokens)."""
    import torch


    total, count = 0.0, 0
    for prompt, answer in zip(prompts, answers):
        head = prompt_ids(tok, prompt)
        tail = tok(answer, add_special_tokens=False)["input_ids"]
        if not tail:
            continue
        ids = torch.tensor([head + tail], device=model.device)
        span = slice(len(head) - 1, len(head) + len(tail) - 1)  # the positions that predict the answer
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, span].float(), -1)
            lq = torch.log_softmax(base(input_ids=ids.to(base.device)).logits[0, span].float(), -1).to(lp.device)
        total += float((lq.exp() * (lq - lp)).sum())
        count += len(tail)
    return (total / count if count else 0.0), count


def run_general(model, base, tok, spec: GeneralSpec, batch_size: int = 16) -> GeneralResult:
    """Score `model` against `base` (the same object when the model is the base)."""

    prompts = [chat_prompt(tok, q.prompt) for q in spec.questions]
    mine = greedy(model, tok, prompts, spec.max_new_tokens, batch_size)
    theirs = mine if base is model else greedy(base, tok, prompts, spec.max_new_tokens, batch_size)
    counted = [i for i, q in enumerate(spec.questions) if q.correct(theirs[i])]
    right = [i for i in counted if spec.questions[i].correct(mine[i])]
    lost = [{"prompt": spec.questions[i].prompt, "base": theirs[i], "got": mine[i]} for i in counted if i not in right]
    kl, kl_tokens = (0.0, sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in theirs)) if base is model \
        else mean_kl(model, base, tok, prompts, theirs)
    replies = greedy(model, tok, [chat_prompt(tok, p) for p in spec.open_prompts], spec.max_new_tokens, batch_size)
    n_words, fake = fake_words(mine + replies, spec.domain_words, spec.language)
    return GeneralResult(
        accuracy=len(right) / len(counted) if counted else None, correct=len(right), counted=len(counted),
        asked=len(spec.questions), kl_to_base=kl, kl_tokens=kl_tokens,
        fake_word_share=len(fake) / n_words if n_words else 0.0, words=n_words, fake_words=sorted(set(fake))[:10],
        distinct1=distinct(replies, 1), distinct2=distinct(replies, 2), repetition=repetition(replies),
        lost=lost[:5], samples=[{"prompt": p, "reply": r} for p, r in list(zip(spec.open_prompts, replies))[:3]],
        bigrams=len(ngrams(replies, 2)), trigrams=len(ngrams(replies, 3)),
    )
