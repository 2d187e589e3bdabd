"""Acceptance thresholds and the stop rule: pure functions of eval numbers, table-tested."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from evo.config import GateConfig


@dataclass(frozen=True)
class GenerationScores:
    """A child's evals beside its parent's, on the same test parts and probes."""

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

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "passed all thresholds"


def gate(s: GenerationScores, cfg: GateConfig) -> GateDecision:
    """Accept only if recall > min, generalization > min and style drift < max (all strict)."""
    reasons = []
    if s.recall is not None and cfg.min_recall is not None and not s.recall > cfg.min_recall:
        reasons.append(f"recall {s.recall:.3f} <= {cfg.min_recall}")
    if cfg.min_generalization is not None and not s.generalization > cfg.min_generalization:
        reasons.append(f"generalization {s.generalization:.3f} <= {cfg.min_generalization}")
    if cfg.max_style_drift is not None and not s.style_drift < cfg.max_style_drift:
        reasons.append(f"style drift {s.style_drift:g} >= {cfg.max_style_drift:g}")
    if cfg.no_recurrence and s.recurred:
        reasons.append(f"corrected error(s) came back: {', '.join(s.recurred)}")
    return GateDecision(not (reasons := reasons + general_reasons(s, cfg)), reasons)


def general_reasons(s: GenerationScores, cfg: GateConfig) -> list[str]:
    """eval.general's thresholds, each checked where both it and the score are set."""
    reasons = []
    if s.general_accuracy is not None and cfg.min_general_accuracy is not None \
            and not s.general_accuracy > cfg.min_general_accuracy:
        reasons.append(f"general questions {s.general_accuracy:.3f} <= {cfg.min_general_accuracy}")
    if s.kl_to_base is not None and cfg.max_kl_to_base is not None and not s.kl_to_base < cfg.max_kl_to_base:
        reasons.append(f"KL from the base {s.kl_to_base:.3f} >= {cfg.max_kl_to_base}")
    if s.fake_words is not None and cfg.max_fake_words is not None and not s.fake_words < cfg.max_fake_words:
        reasons.append(f"fake words {s.fake_words:.3f} >= {cfg.max_fake_words}")
    if None not in (s.distinct2, s.parent_distinct2, cfg.max_distinct2_drop) \
            and not s.parent_distinct2 - s.distinct2 < cfg.max_distinct2_drop:
        reasons.append(f"distinct-2 fell {s.parent_distinct2 - s.distinct2:.3f} (to {s.distinct2:.3f}) "
                       f">= {cfg.max_distinct2_drop}")
    if None not in (s.repetition, s.parent_repetition, cfg.max_repetition_rise) \
            and not s.repetition - s.parent_repetition < cfg.max_repetition_rise:
        reasons.append(f"repetition rose {s.repetition - s.parent_repetition:.3f} (to {s.repetition:.3f}) "
                       f">= {cfg.max_repetition_rise}")
    return reasons


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
