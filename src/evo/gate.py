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
    return GateDecision(not reasons, reasons)


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
