"""Near-copies: the one measure evo uses wherever two sets of texts are kept apart.

Two texts are near-copies when the overlap of their word sets, with one unshared word forgiven
(shared words / (all words - 1), at most 1), is at least `THRESHOLD` (0.73). Words are normalized
first: lower case, punctuation and apostrophes dropped, a number word written as its digits ("two"
is "2"), a final "s" cut ("costs" is "cost"). So word order, case, punctuation and a plural make no
difference ("What is 3 plus 5?" and "What is 5 plus 3?": 1.0), nor does one word changed in a text
of four or more ("What is the capital of Spain?" and "... of France?": 5 of 6, 0.83; "tr big owl
hides =" and "tr big owl digs =": 0.75), while two changed words apart a question from another that
shares only its frame ("How much does the Ostira saw cost?" and "... the Wynvek lamp cost?": 0.62;
"What is the capital of South Korea?" and "... of Australia?": 0.71).

The threshold was chosen on a validation sample of 46 labelled pairs, labelled before any threshold
was tried (`bench/bench_nearcopy.py --choose` prints them and every candidate's errors;
docs/benchmarks.md has the result): the fewest errors (3 of 46; plain Jaccard, nothing forgiven,
made 6 at best), and of the thresholds that tie, the middle.

Where it is used: the base's self-replay prompts against eval.general's sets (`evo.inputs`); targeted
candidates against every scored set (`evo.curation.targeted`, the experiment's evaluation set among
them); the A/B judge's prompts against every delta (`evo.ab_round`) and an exported round's preference pairs
against every test part and the style probes (`evo.ab.export`): where the domain's generator names the question a
prompt asks, as the demo's does, its prompts are compared by that instead (`SameQuestion`, `apart_from`); the val
probes that choose against the probes that report (`evo.inputs`).

Not where a delta's own parts are kept apart (the training mix against the test parts, `evo.data.mix.KeptApart`;
a fine-tuning job's validation file, `evo.finetune.validation`): those compare the split's question key
(`evo.data.store.question_key`), because a delta's train, val and test parts are drawn from the same templates, so
one changed word ("Who designed the Ostira saw?", "... the Ndletov saw?": 0.8) is the norm between them and is
what generalization measures.

`NearIndex` finds a text's near-copies among many without comparing every pair: each indexed set is
filed under its rarest words only (a prefix filter: two sets of overlap >= t share at least
ceil(t (|s| - 1)) words, so they share one of the first |s| - that + 1 words of each in one fixed
order), and a lookup reads only the sets that could pass.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Optional

THRESHOLD = 0.73  # chosen on the validation sample of bench/bench_nearcopy.py (see the module docstring)

_WORD = re.compile(r"[a-z0-9]+")
_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def _normal(word: str) -> str:
    word = _NUMBERS.get(word, word)
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def words(text: str) -> frozenset[str]:
    """The normalized word set of `text`."""
    return frozenset(_normal(w) for w in _WORD.findall(text.lower().replace("'", "")))


def overlap(a: frozenset[str], b: frozenset[str]) -> float:
    """The Jaccard overlap of two word sets with one unshared word forgiven: shared words over all
    words but one (1.0 at most; 0 when either is empty: an empty text copies nothing)."""
    shared = len(a & b)
    if not shared:
        return 0.0
    return min(1.0, shared / max(1, len(a) + len(b) - shared - 1))


def similarity(a: str, b: str) -> float:
    """The overlap of two texts' word sets."""
    return overlap(words(a), words(b))


def near(a: str, b: str, threshold: float = THRESHOLD) -> bool:
    return similarity(a, b) >= threshold


def questions(record) -> list[str]:
    """What a record asks, as near-copies are compared: a prompt; every user turn of a chat (or of a
    preference record's conversation); a text record's whole text."""
    if record.kind == "text":
        return [record.completion]
    if record.messages:
        return [m["content"] for m in json.loads(record.messages) if m.get("role") == "user"] or [record.prompt]
    return [record.prompt]


def _need(size: int, threshold: float) -> int:
    """The fewest shared words a set of `size` words needs to reach `threshold` with any other set:
    shared >= threshold * (union - 1) >= threshold * (size - 1)."""
    return max(1, math.ceil(threshold * (size - 1) - 1e-9))


class NearIndex:
    """Many texts, indexed to answer "which of them is `text` a near-copy of?" cheaply."""

    def __init__(self, texts: Iterable[str], threshold: float = THRESHOLD):
        self.threshold = threshold
        self.texts: list[str] = []
        self.sets: list[frozenset[str]] = []
        for t in texts:
            s = words(t)
            if s:
                self.texts.append(t)
                self.sets.append(s)
        self.freq = Counter(w for s in self.sets for w in s)
        self.postings: dict[str, list[int]] = {}
        for i, s in enumerate(self.sets):
            for w in self._prefix(s):
                self.postings.setdefault(w, []).append(i)

    def _prefix(self, s: frozenset[str]) -> list[str]:
        ordered = sorted(s, key=lambda w: (self.freq.get(w, 0), w))  # rarest first: short postings
        return ordered[: len(s) - _need(len(s), self.threshold) + 1]

    def nearest(self, text: str) -> Optional[tuple[str, float]]:
        """The indexed text most similar to `text` at or above the threshold, and its overlap; None
        when there is none."""
        q = words(text)
        if not q:
            return None
        seen: set[int] = set()
        best: Optional[tuple[str, float]] = None
        for w in self._prefix(q):
            for i in self.postings.get(w, ()):
                if i in seen:
                    continue
                seen.add(i)
                score = overlap(q, self.sets[i])
                if score >= self.threshold and (best is None or score > best[1]):
                    best = (self.texts[i], score)
        return best

    def __contains__(self, text: str) -> bool:
        return self.nearest(text) is not None

    def __len__(self) -> int:
        return len(self.texts)


def near_copies(texts: Iterable[str], others: Iterable[str],
                threshold: float = THRESHOLD) -> list[tuple[str, str, float]]:
    """Each text of `texts` that is a near-copy of one of `others`: (text, the other, overlap)."""
    index = NearIndex(others, threshold)
    out = []
    for t in texts:
        hit = index.nearest(t)
        if hit is not None:
            out.append((t, hit[0], hit[1]))
    return out


class SameQuestion:
    """Kept-apart texts compared by the domain's own question identity: `key(prompt)` (the generator's
    `question`) names the question a prompt asks, or None for a prompt outside the domain. Two prompts
    of the domain ask the same question when their keys are equal; a prompt the domain cannot read is
    compared with the others of its kind by the word measure (`NearIndex`). A domain defines `question`
    when one changed word makes another question (the demo's phrases: "tr big owl hides =" and
    "tr big owl digs =" have different answers, which a model knowing one cannot copy from the other)."""

    def __init__(self, key: Callable[[str], object], texts: Iterable[str]):
        self.key = key
        keyed = [(t, key(t)) for t in texts]
        self.keys = {k for _, k in keyed if k is not None}
        self.words = NearIndex(t for t, k in keyed if k is None)

    def __contains__(self, text: str) -> bool:
        k = self.key(text)
        return (k is not None and k in self.keys) or text in self.words  # the domain's, then the word measure's

    def __len__(self) -> int:
        return len(self.keys) + len(self.words)


def apart_from(texts: Iterable[str], generator: object = None) -> NearIndex | SameQuestion:
    """What `text in ...` asks of a set kept apart: by the domain's question where its generator
    defines `question` (`SameQuestion`), else by the word measure (`NearIndex`)."""
    key = getattr(generator, "question", None)
    return SameQuestion(key, list(texts)) if callable(key) else NearIndex(texts)
