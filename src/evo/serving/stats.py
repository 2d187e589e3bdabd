"""A/B statistics: win rates with Wilson intervals and a verdict from a stated test.

The test. Pairwise preferences (ties dropped) are a sign test of "candidate preferred" against
p = 0.5, exact binomial, two-sided. Without enough pairwise votes, thumbs are compared with a
two-proportion z-test. Either way the verdict needs at least `min_samples` observations. An A/B
round looks at the data repeatedly and runs both tests at each look, so each test uses
alpha / (2 * max_looks) (Bonferroni over every test the round may run), which keeps the chance of
any false "better" or "worse" verdict in the round at or below alpha.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

from evo.serving.router import ARMS

CANDIDATE_BETTER, CANDIDATE_WORSE, UNDECIDED = "candidate better", "candidate worse", "undecided"


@dataclass(frozen=True)
class TestPlan:
    __test__ = False  # a statistical test's plan, not a pytest class
    alpha: float = 0.05  # chance of a wrong "better"/"worse" verdict over the whole round
    min_samples: int = 30  # decisive pairwise votes (or thumbs per arm) before any verdict
    max_looks: int = 10  # how often the round may test; each test uses alpha / (2 * max_looks)

    @property
    def alpha_per_look(self) -> float:
        """Per test: two tests (pairwise, thumbs) at each of max_looks looks share alpha."""
        return self.alpha / (2 * self.max_looks)


def _z(alpha_two_sided: float) -> float:
    """Standard normal quantile for 1 - alpha/2, by bisection on erfc (no scipy needed)."""
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if math.erfc(mid / math.sqrt(2)) > alpha_two_sided:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def wilson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0, 1) when there is no data."""
    if n == 0:
        return 0.0, 1.0
    z = _z(alpha)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair trials (sums outcomes no likelier than k)."""
    if n == 0:
        return 1.0
    log_pmf = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(n + 1)]
    bound = log_pmf[k] + 1e-9
    return min(1.0, sum(math.exp(lp) for lp in log_pmf if lp <= bound))


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of a pooled two-proportion z-test."""
    if not n1 or not n2:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return math.erfc(abs(k1 / n1 - k2 / n2) / se / math.sqrt(2))


@dataclass
class Verdict:
    verdict: str
    test: str
    p_value: Optional[float]
    n: int
    reason: str

    def to_json(self) -> dict:
        return asdict(self)


def pairwise_verdict(candidate_wins: int, champion_wins: int, plan: TestPlan) -> Verdict:
    n = candidate_wins + champion_wins
    if n < plan.min_samples:
        return Verdict(UNDECIDED, "sign test", None, n, f"{n} decisive pairwise votes, need {plan.min_samples}")
    p = binomial_two_sided_p(candidate_wins, n)
    if p >= plan.alpha_per_look:
        return Verdict(UNDECIDED, "sign test", p, n, f"p = {p:.3g} >= {plan.alpha_per_look:.3g}")
    better = candidate_wins > champion_wins
    return Verdict(CANDIDATE_BETTER if better else CANDIDATE_WORSE, "sign test", p, n,
                   f"candidate preferred {candidate_wins} of {n} times, p = {p:.3g} < {plan.alpha_per_look:.3g}")


def thumbs_verdict(up_cand: int, n_cand: int, up_champ: int, n_champ: int, plan: TestPlan) -> Verdict:
    n = min(n_cand, n_champ)
    if n < plan.min_samples:
        return Verdict(UNDECIDED, "two-proportion z-test", None, n_cand + n_champ,
                       f"{n_cand} candidate and {n_champ} champion ratings, need {plan.min_samples} each")
    p = two_proportion_p(up_cand, n_cand, up_champ, n_champ)
    if p >= plan.alpha_per_look:
        return Verdict(UNDECIDED, "two-proportion z-test", p, n_cand + n_champ,
                       f"p = {p:.3g} >= {plan.alpha_per_look:.3g}")
    better = up_cand / n_cand > up_champ / n_champ
    return Verdict(CANDIDATE_BETTER if better else CANDIDATE_WORSE, "two-proportion z-test", p, n_cand + n_champ,
                   f"thumbs up {up_cand}/{n_cand} vs {up_champ}/{n_champ}, p = {p:.3g} < {plan.alpha_per_look:.3g}")


def summarize(events: list[dict], plan: TestPlan) -> dict:
    """Per-arm counts and rates from the event log, and the round's verdict so far."""
    arm_of = {e["response_id"]: e["arm"] for e in events if e["kind"] == "response"}
    arms = {a: {"requests": 0, "thumbs_up": 0, "thumbs_down": 0, "pairwise_wins": 0} for a in ARMS}
    ties = 0
    for e in events:
        if e["kind"] == "response":
            arms[e["arm"]]["requests"] += 1
        elif e["kind"] == "thumbs" and e["response_id"] in arm_of:
            arms[arm_of[e["response_id"]]]["thumbs_" + e["value"]] += 1
        elif e["kind"] == "pairwise":
            if e["winner"] == "tie":
                ties += 1
            else:
                arms[e["winner"]]["pairwise_wins"] += 1
    for a in arms.values():
        rated = a["thumbs_up"] + a["thumbs_down"]
        a["thumbs_up_rate"] = a["thumbs_up"] / rated if rated else None
        a["thumbs_up_ci"] = wilson(a["thumbs_up"], rated, plan.alpha)
    cw, hw = arms["candidate"]["pairwise_wins"], arms["champion"]["pairwise_wins"]
    pair = pairwise_verdict(cw, hw, plan)
    c, h = arms["candidate"], arms["champion"]
    thumbs = thumbs_verdict(c["thumbs_up"], c["thumbs_up"] + c["thumbs_down"],
                            h["thumbs_up"], h["thumbs_up"] + h["thumbs_down"], plan)
    if pair.verdict != UNDECIDED:
        verdict = pair
    elif thumbs.verdict != UNDECIDED:
        verdict = thumbs
    else:  # undecided: explain with whichever kind of feedback is coming in
        verdict = pair if pair.n > 0 or thumbs.n == 0 else thumbs
    return {
        "arms": arms,
        "pairwise": {"candidate_wins": cw, "champion_wins": hw, "ties": ties,
                     "candidate_win_rate": cw / (cw + hw) if cw + hw else None,
                     "candidate_win_ci": wilson(cw, cw + hw, plan.alpha)},
        "verdict": verdict.to_json(),
        "plan": {"alpha": plan.alpha, "min_samples": plan.min_samples, "max_looks": plan.max_looks,
                 "alpha_per_look": plan.alpha_per_look},
    }
