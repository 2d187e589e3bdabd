"""Acceptance thresholds and the stop rule: pure functions of eval numbers, table-tested.

A threshold is one of two kinds (each field of `GateConfig` says which):

- absolute: a level the child must reach on its own: recall of the line's earlier test parts and
  generalization on its own delta's test part (what it must know), and optional caps on drift-type
  evals (style drift, fake words, general questions kept, KL from the base). A base that fails one is
  flagged at generation 0 (`base_flags`).
- relative to the parent: drift-type evals (style drift, fake words, repetition, distinct-2, general
  questions kept) are judged as the child's change from its parent on the same probes, beyond a
  tolerance and beyond noise: each is a count of k of n (probes hit, words invented, trigrams
  repeated, questions answered), and the child is rejected only when the one-sided lower confidence
  bound (`gate.drift_confidence`, 95%) of its rate minus the parent's is above the tolerance
  (Newcombe's hybrid Wilson score interval for a difference of two proportions). On 10 probes and a
  tolerance of 0 that rejects a parent's 0 -> 3 hits, 1 -> 5, 2 -> 6, and never 2 -> 2.

Recall is what the child keeps of its line's test parts: under `min_recall`, a child is rejected
only when it recalls less of the same items than its parent beyond noise (the same Newcombe bound,
tolerance 0); an eval report without the parent's recall keeps the absolute rule.

A child is not rejected for a property it inherited unchanged: an absolute cap on a drift-type eval
that the parent fails as well is judged as a change from the parent (tolerance 0), like the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Optional

from evo.config import GateConfig


@dataclass(frozen=True)
class GenerationScores:
    """A child's evals beside its parent's, on the same test parts and probes.

    The counts (`style_probes`, `general_counted`, `words`, `bigrams`, `trigrams`) are the n of each
    rate, for the noise allowance; eval reports written before they existed load without them (None:
    a rate is then compared with no allowance for noise)."""

    recall: Optional[float]  # None when there is nothing earlier to recall
    generalization: float
    style_drift: float
    parent_generalization: float
    parent_style_drift: float
    recurred: tuple = ()  # corrected error patterns that were healed on this line and came back
    # eval.general (None when it is off): the child's, and its parent's where the gate compares them
    general_accuracy: Optional[float] = None  # on the general questions the base answers correctly
    kl_to_base: Optional[float] = None
    fake_words: Optional[float] = None
    distinct2: Optional[float] = None
    parent_distinct2: Optional[float] = None
    repetition: Optional[float] = None
    parent_repetition: Optional[float] = None
    style_probes: Optional[int] = None  # probes asked (the same for both)
    parent_general_accuracy: Optional[float] = None
    general_counted: Optional[int] = None  # general questions the base answers (the same for both)
    parent_kl_to_base: Optional[float] = None
    parent_fake_words: Optional[float] = None
    words: Optional[int] = None  # words generated (fake words' n)
    parent_words: Optional[int] = None
    bigrams: Optional[int] = None  # word bigrams of the open replies (distinct-2's n)
    parent_bigrams: Optional[int] = None
    trigrams: Optional[int] = None  # word trigrams of the open replies (repetition's n)
    parent_trigrams: Optional[int] = None
    parent_recall: Optional[float] = None  # the parent's recall of the same items (None: an older report)
    recall_items: Optional[int] = None  # the items recall is over (the n of both rates)
    # of those same items: the parent answered right and the child wrong (lost), and the other way
    # (gained); the paired test's discordant pairs. None: a report from before they were counted
    recall_lost: Optional[int] = None
    recall_gained: Optional[int] = None

    @property
    def d_generalization(self) -> float:
        return self.generalization - self.parent_generalization

    @property
    def d_style_drift(self) -> float:
        return self.style_drift - self.parent_style_drift


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    inherited: list[str] = field(default_factory=list)  # absolute caps the parent fails too, not held against the child

    @property
    def reason(self) -> str:
        if self.reasons:
            return "; ".join(self.reasons)
        if self.inherited:
            return f"passed all thresholds (inherited from the parent, unchanged: {'; '.join(self.inherited)})"
        return "passed all thresholds"


# ---------------------------------------------------------------- noise on k of n


def wilson(k: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n at normal quantile z."""
    p, z2 = k / n, z * z
    centre, half = (p + z2 / (2 * n)), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z2 / n)), min(1.0, (centre + half) / (1 + z2 / n))


DECIDED_HALFWIDTH = 0.1  # a test part decides a threshold when its 95% interval is no wider than this each side


def interval_note(correct: int, total: int, threshold: Optional[float]) -> str:
    """The ledger's account of a test-part score against its threshold: k/n, its 95% Wilson interval,
    whether that is within ±DECIDED_HALFWIDTH, and whether the threshold falls inside it (the
    decision is then within noise). Empty without items."""
    if not total:
        return ""
    lo, hi = wilson(correct, total, NormalDist().inv_cdf(0.975))
    half = (hi - lo) / 2
    note = f"{correct}/{total}, 95% {lo:.2f}-{hi:.2f} (±{half:.2f}"
    note += ")" if half <= DECIDED_HALFWIDTH else f", wider than ±{DECIDED_HALFWIDTH:g}: too few test items)"
    if threshold is not None:
        note += f"; threshold {threshold:g} " + ("inside it: within noise" if lo <= threshold <= hi else "outside it")
    return note


def rise_lower_bound(worse: float, n_worse: int, better: float, n_better: int, confidence: float) -> float:
    """One-sided lower confidence bound of rate(worse) - rate(better) (Newcombe's hybrid score
    interval, method 10 of Newcombe 1998), for rates worse = k1/n1 and better = k2/n2 given as shares."""
    z = NormalDist().inv_cdf(confidence)
    k1, k2 = worse * n_worse, better * n_better
    l1, _ = wilson(k1, n_worse, z)
    _, u2 = wilson(k2, n_better, z)
    return worse - better - math.sqrt((worse - l1) ** 2 + (u2 - better) ** 2)


def worse_beyond_noise(worse: float, n_worse: Optional[int], better: float, n_better: Optional[int],
                       tolerance: float, confidence: float) -> bool:
    """True when `worse` exceeds `better` by more than `tolerance` with `confidence` (both shares of
    k of n); without the n (an old eval report), when it exceeds it by more than `tolerance` at all."""
    if not n_worse or not n_better:
        return round(worse - better, 9) > tolerance
    return rise_lower_bound(worse, n_worse, better, n_better, confidence) > tolerance


def smallest_rejected(parent_hits: int, n: int, rise: int = 0, confidence: float = 0.95) -> Optional[int]:
    """The fewest probe hits (of `n`) that reject a child whose parent hit `parent_hits` (None: none do)."""
    return next((k for k in range(n + 1)
                 if worse_beyond_noise(k / n, n, parent_hits / n, n, rise / n, confidence)), None)


# ---------------------------------------------------------------- the gate


@dataclass(frozen=True)
class Drift:
    """One drift-type eval of a child beside its parent: shares of k of n; `lower_is_better` says
    which way is worse."""

    name: str
    child: Optional[float]
    n: Optional[int]
    parent: Optional[float]
    parent_n: Optional[int]
    lower_is_better: bool = True
    spec: str = ".3f"

    @property
    def known(self) -> bool:
        return self.child is not None and self.parent is not None

    def worse(self, tolerance: float, confidence: float) -> bool:
        """Worse than the parent by more than `tolerance` (a share) beyond the noise of k of n."""
        if self.lower_is_better:
            return worse_beyond_noise(self.child, self.n, self.parent, self.parent_n, tolerance, confidence)
        return worse_beyond_noise(1 - self.child, self.n, 1 - self.parent, self.parent_n, tolerance, confidence)

    def change(self) -> str:
        verb = ("rose" if self.child >= self.parent else "fell") if self.lower_is_better else \
            ("fell" if self.child <= self.parent else "rose")
        return f"{self.name} {verb} from {self.parent:{self.spec}} (parent) to {self.child:{self.spec}}"


def drifts(s: GenerationScores) -> dict[str, Drift]:
    """The drift-type evals of `s`, style drift as shares of its probes."""
    n = s.style_probes
    return {
        "style": Drift("style drift", s.style_drift / n if n else s.style_drift, n,
                       s.parent_style_drift / n if n else s.parent_style_drift, n),
        "fake": Drift("fake words", s.fake_words, s.words, s.parent_fake_words, s.parent_words),
        "repetition": Drift("repetition", s.repetition, s.trigrams, s.parent_repetition, s.parent_trigrams),
        "distinct2": Drift("distinct-2", s.distinct2, s.bigrams, s.parent_distinct2, s.parent_bigrams, False),
        "general": Drift("general questions kept", s.general_accuracy, s.general_counted, s.parent_general_accuracy,
                         s.general_counted, False),
    }


def sign_test_p(lost: int, gained: int) -> float:
    """One-sided exact sign test (McNemar's, exact): P(at least `lost` of the lost + gained discordant
    items go against the child) when each is as likely to go either way."""
    n = lost + gained
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2 ** n if n else 1.0


def recall_worse(s: GenerationScores, confidence: float) -> bool:
    """The child recalls fewer of the same items than its parent beyond noise. Both were asked the same
    items, so the test is paired: only the items one got right and the other wrong say anything (an
    exact sign test on them at `confidence`). A report without those counts falls back to comparing
    the two shares as independent (Newcombe), which allows more noise than the paired test."""
    if s.recall_lost is not None and s.recall_gained is not None:
        return s.recall_lost > s.recall_gained and sign_test_p(s.recall_lost, s.recall_gained) < 1 - confidence
    return worse_beyond_noise(1 - s.recall, s.recall_items, 1 - s.parent_recall, s.recall_items, 0.0, confidence)


def gate(s: GenerationScores, cfg: GateConfig) -> GateDecision:
    """Accept only if every absolute threshold holds (recall > min, generalization > min, strict) and
    no drift-type eval got worse than the parent's beyond its tolerance and noise."""
    reasons, inherited_recall = [], None
    if s.recall is not None and cfg.min_recall is not None and not s.recall > cfg.min_recall:
        if s.parent_recall is not None and s.recall_items and not recall_worse(s, cfg.drift_confidence):
            paired = (f" (lost {s.recall_lost}, gained {s.recall_gained})" if s.recall_lost is not None else "")
            inherited_recall = (f"recall {s.recall:.3f} <= {cfg.min_recall}, within noise of its parent's "
                                f"{s.parent_recall:.3f} on the same {s.recall_items} items{paired}")
        else:
            reasons.append(f"recall {s.recall:.3f} <= {cfg.min_recall}"
                           + (f", below its parent's {s.parent_recall:.3f} beyond noise" if s.parent_recall is not None else ""))
    if cfg.min_generalization is not None and s.generalization is not None \
            and not s.generalization > cfg.min_generalization:
        reasons.append(f"generalization {s.generalization:.3f} <= {cfg.min_generalization}")
    if cfg.no_recurrence and s.recurred:
        reasons.append(f"corrected error(s) came back: {', '.join(s.recurred)}")
    capped, inherited = absolute_caps(s, cfg, STYLE)
    reasons += capped + relative_reasons(s, cfg, STYLE) + general_reasons(s, cfg)
    if inherited_recall:  # recall is what the child keeps of its line: judged against what its parent kept
        inherited = [inherited_recall] + inherited
    return GateDecision(not reasons, reasons, inherited + absolute_caps(s, cfg, GENERAL)[1])


STYLE, GENERAL = ("style",), ("general", "kl", "fake", "repetition", "distinct2")


def general_reasons(s: GenerationScores, cfg: GateConfig) -> list[str]:
    """eval.general's thresholds (absolute caps, then changes from the parent), each checked where both
    it and the score are set."""
    return absolute_caps(s, cfg, GENERAL)[0] + relative_reasons(s, cfg, GENERAL)


def caps(s: GenerationScores, cfg: GateConfig) -> list[tuple[str, Optional[str], Optional[str]]]:
    """The absolute caps on drift-type evals: (key in `drifts`, the child's failure, the parent's)."""
    out = []

    def cap(key, value, parent, limit, fails, text):
        if value is not None and limit is not None:
            out.append((key, text(value) if fails(value) else None,
                        text(parent) if parent is not None and fails(parent) else None))

    cap("style", s.style_drift, s.parent_style_drift, cfg.max_style_drift,
        lambda v: not v < cfg.max_style_drift, lambda v: f"style drift {v:g} >= {cfg.max_style_drift:g}")
    cap("general", s.general_accuracy, s.parent_general_accuracy, cfg.min_general_accuracy,
        lambda v: not v > cfg.min_general_accuracy, lambda v: f"general questions {v:.3f} <= {cfg.min_general_accuracy}")
    cap("kl", s.kl_to_base, s.parent_kl_to_base, cfg.max_kl_to_base,
        lambda v: not v < cfg.max_kl_to_base, lambda v: f"KL from the base {v:.3f} >= {cfg.max_kl_to_base}")
    cap("fake", s.fake_words, s.parent_fake_words, cfg.max_fake_words,
        lambda v: not v < cfg.max_fake_words, lambda v: f"fake words {v:.3f} >= {cfg.max_fake_words}")
    return out


def absolute_caps(s: GenerationScores, cfg: GateConfig, keys: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(reasons, inherited) of the caps in `keys`: a cap the child fails rejects it, unless the parent
    fails it too and the child is no worse than the parent beyond noise (then it is inherited, and said so)."""
    reasons, inherited = [], []
    d = drifts(s)
    for key, child, parent in caps(s, cfg):
        if child is None or key not in keys:
            continue
        if parent is None:
            reasons.append(child)
        elif key == "kl":  # a mean over tokens, not k of n: inherited if no larger than the parent's
            (reasons if s.kl_to_base > s.parent_kl_to_base else inherited).append(f"{child} (parent: {parent})")
        elif d[key].worse(0.0, cfg.drift_confidence):
            reasons.append(f"{child}, worse than its parent beyond noise (parent: {parent})")
        else:
            inherited.append(f"{child} (parent: {parent})")
    return reasons, inherited


def relative_reasons(s: GenerationScores, cfg: GateConfig, keys: tuple[str, ...]) -> list[str]:
    """The drift-type evals in `keys` against the parent, each checked where its tolerance and both
    scores are set."""
    n, rise = s.style_probes, cfg.max_style_drift_rise
    tolerances = {
        "style": None if rise is None else rise / n if n else rise,  # probes, as a share where n is known
        "fake": cfg.max_fake_words_rise, "repetition": cfg.max_repetition_rise,
        "distinct2": cfg.max_distinct2_drop, "general": cfg.max_general_drop,
    }
    reasons = []
    for key, drift in drifts(s).items():
        tol = tolerances[key] if key in keys else None
        if tol is not None and drift.known and drift.worse(tol, cfg.drift_confidence):
            shown = f"{cfg.max_style_drift_rise:g} probe(s)" if key == "style" else f"{tol:g}"
            counts = f" of {n} probes" if key == "style" and n else ""
            text = (f"style drift rose from {s.parent_style_drift:g} (parent) to {s.style_drift:g}{counts}"
                    if key == "style" else drift.change())
            noise = f" beyond noise at {cfg.drift_confidence:.0%} confidence" if drift.n and drift.parent_n else ""
            reasons.append(f"{text}: more than {shown}{noise}")
    return reasons


def base_flags(s: GenerationScores, cfg: GateConfig) -> list[str]:
    """The absolute thresholds generation 0 fails on its own evals (`s`: the base beside itself).
    Its children are judged on what they change, not rejected for what they inherit; the flag says
    that the base itself is below the bar."""
    flags = []
    if cfg.min_generalization is not None and s.generalization is not None \
            and not s.generalization > cfg.min_generalization:
        flags.append(f"test accuracy {s.generalization:.3f} <= {cfg.min_generalization} (gate.min_generalization)")
    fields = {"style": "max_style_drift", "general": "min_general_accuracy", "kl": "max_kl_to_base",
              "fake": "max_fake_words"}
    flags += [f"{child} (gate.{fields[key]})" for key, child, _ in caps(s, cfg) if child is not None]
    return flags


def base_reason(flags: list[str]) -> str:
    """The ledger reason of generation 0."""
    if not flags:
        return "generation 0 (base model)"
    return (f"generation 0 (base model); below the gate's absolute thresholds: {'; '.join(flags)} "
            "(its children are judged on what they change from it)")


# ---------------------------------------------------------------- the stop rule


def stalled_and_drifting(s: GenerationScores, cfg: GateConfig) -> bool:
    # rounded so that float noise (1.3 - 1.2 = 0.10000000000000009) does not cross a threshold
    return round(s.d_generalization, 9) < cfg.epsilon and round(s.d_style_drift, 9) > cfg.theta


def should_stop(history: Sequence[GenerationScores], cfg: GateConfig) -> bool:
    """True when the last `patience` (2) generations each stalled while drift grew."""
    tail = list(history)[-cfg.patience :]
    return len(tail) == cfg.patience and all(stalled_and_drifting(s, cfg) for s in tail)


STOP_MESSAGE = (
    "stopped: for {n} consecutive generations generalization gained less than {eps} while style "
    "drift grew by more than {theta}. The champion is back to the last good generation, "
    "{restored}. The data needs fixing (more or cleaner examples), not more training."
)
