"""The A/B round's verdict: a sequential sign test over distinct prompts whose error rate holds.

The test. Among the counted decisive votes (which votes count: `evo.ab.tally`), "the candidate is
preferred" is tested against p = 0.5 (a sign test) at looks fixed in advance: after every
`look_every` decisive votes, at most `max_looks` times. The critical values come from exact binomial
sums under p = 0.5 with an O'Brien-Fleming-type alpha-spending function (Lan-DeMets), so the chance
of any false "better" or "worse" verdict over all the looks of a round is at most `alpha`, however
often the statistics are read: a verdict is only ever taken at a scheduled look, and the first look
that crosses decides. After the last look without a crossing the round ends with "no difference
found". `bench/bench_ab_calibration.py` checks both error rates by simulation.

Thumbs are reported per arm with Wilson intervals (`wilson`), not tested: a response's rating says
nothing about the other arm's answer to the same prompt, and repeated prompts make ratings dependent.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from typing import Optional

CANDIDATE_BETTER, CANDIDATE_WORSE, UNDECIDED = "candidate better", "candidate worse", "undecided"
NO_DIFFERENCE = "no difference found"
TEST_NAME = "sequential sign test over distinct prompts (O'Brien-Fleming spending, exact binomial)"


@dataclass(frozen=True)
class TestPlan:
    """Fixed before a round's first vote."""

    __test__ = False  # a statistical test's plan, not a pytest class
    alpha: float = 0.05  # chance of a wrong "better"/"worse" verdict over the whole round
    look_every: int = 10  # decisive votes (distinct prompts) between looks
    max_looks: int = 12  # looks in all; the last one is at look_every * max_looks decisive votes

    def __post_init__(self):
        if not 0 < self.alpha < 1 or self.look_every < 1 or self.max_looks < 1:
            raise ValueError(f"test plan: needs 0 < alpha < 1, look_every >= 1, max_looks >= 1, got {self}")

    @property
    def looks(self) -> list[int]:
        """Decisive votes at each look."""
        return [self.look_every * (j + 1) for j in range(self.max_looks)]

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "look_every": self.look_every, "max_looks": self.max_looks,
                "critical_wins": [list(c) if c else None for c in critical_wins(self)]}


def plan_for(prompts: int, base: TestPlan = TestPlan()) -> TestPlan:
    """The plan of a round that can ask only `prompts` distinct prompts (each votes once): no more
    looks than they can fill, so the alpha is spent by the time the pool can be used up (a plan of
    120 decisive votes on a pool of 64 could decide only at its first, strictest looks)."""
    return replace(base, max_looks=max(1, min(base.max_looks, prompts // base.look_every)))


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
    """Exact two-sided p-value of k successes in n fair trials: the outcomes no likelier than k, which
    for p = 1/2 are the two tails beyond min(k, n-k), so 2 P(X <= min(k, n-k)). The tail is summed
    from its edge outwards until the terms stop mattering (about sqrt(n) terms near the centre, a few
    far out), so a stats read stays cheap with 100,000 votes."""
    m = min(k, n - k)
    if n == 0 or 2 * m >= n:
        return 1.0
    log_term = math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1) - n * math.log(2)
    total, i = 0.0, m
    while i >= 0:
        term = math.exp(log_term)
        total += term
        if term <= total * 1e-17:
            break
        if i > 0:
            log_term += math.log(i) - math.log(n - i + 1)  # pmf(i - 1) / pmf(i)
        i -= 1
    return min(1.0, 2 * total)


@dataclass
class Verdict:
    verdict: str
    test: str
    p_value: Optional[float]  # nominal two-sided binomial p at the deciding (or latest) look
    n: int  # decisive votes it rests on
    reason: str
    looks: int = 0  # looks done
    interval: tuple[float, float] = (0.0, 1.0)  # Wilson interval of the candidate's win rate

    def to_json(self) -> dict:
        return asdict(self)


def _spend(alpha: float, t: float) -> float:
    """Alpha spent by information fraction t (O'Brien-Fleming type): 2 - 2 Phi(z_{alpha/2} / sqrt(t))."""
    return math.erfc(_z(alpha) / math.sqrt(t) / math.sqrt(2))


def _binomial_step(dist: list[float], m: int) -> list[float]:
    """The distribution of wins after m more fair coin flips."""
    pmf = [math.exp(math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) - m * math.log(2))
           for i in range(m + 1)]
    out = [0.0] * (len(dist) + m)
    for k, pk in enumerate(dist):
        if pk:
            for i, pi in enumerate(pmf):
                out[k + i] += pk * pi
    return out


@functools.lru_cache(maxsize=32)
def critical_wins(plan: TestPlan) -> tuple[Optional[tuple[int, int]], ...]:
    """Per look: (low, high) such that candidate wins <= low or >= high decides; None where the
    alpha that may be spent by then allows no verdict. Computed exactly under p = 0.5, for the
    walks that have not crossed at an earlier look."""
    looks, alive, spent, out, n_prev = plan.looks, [1.0], 0.0, [], 0
    for n in looks:
        alive = _binomial_step(alive, n - n_prev)
        n_prev = n
        allowed = _spend(plan.alpha, n / looks[-1]) - spent
        best = None
        for d in range(n // 2 + 1):  # low = d, high = n - d: the widest pair within what may be spent
            mass = sum(alive[: d + 1]) + sum(alive[n - d:])
            if mass > allowed + 1e-15:
                break
            best = (d, n - d, mass)
        if best is None:
            out.append(None)
            continue
        low, high, mass = best
        spent += mass
        alive = [0.0 if (k <= low or k >= high) else p for k, p in enumerate(alive)]
        out.append((low, high))
    return tuple(out)


def verdict_of(cum_wins: list[int], plan: TestPlan) -> Verdict:
    """The verdict from the running count of candidate wins over the decisive counted votes
    (`cum_wins[i]`: wins among the first i+1): each look reads one entry."""
    decisive = cum_wins
    bounds = critical_wins(plan)
    looks_done = 0
    for j, n in enumerate(plan.looks):
        if len(decisive) < n:
            break
        looks_done = j + 1
        wins = cum_wins[n - 1]
        p = binomial_two_sided_p(wins, n)
        b = bounds[j]
        if b is not None and (wins <= b[0] or wins >= b[1]):
            better = wins >= b[1]
            return Verdict(CANDIDATE_BETTER if better else CANDIDATE_WORSE, TEST_NAME, p, n,
                           f"look {j + 1} of {plan.max_looks}: candidate preferred on {wins} of {n} distinct "
                           f"prompts (decides at <= {b[0]} or >= {b[1]}), nominal p = {p:.3g}",
                           looks_done, wilson(wins, n, plan.alpha))
    n = len(decisive)
    wins = cum_wins[-1] if n else 0
    ci = wilson(wins, n, plan.alpha)
    p = binomial_two_sided_p(wins, n) if n else None
    if looks_done == plan.max_looks:
        return Verdict(NO_DIFFERENCE, TEST_NAME, p, n, f"all {plan.max_looks} looks done, none crossed: "
                       f"candidate preferred on {wins} of {n} distinct prompts", looks_done, ci)
    nxt = plan.looks[looks_done]
    return Verdict(UNDECIDED, TEST_NAME, p, n, f"{n} decisive votes on distinct prompts; look {looks_done + 1} "
                   f"of {plan.max_looks} at {nxt}", looks_done, ci)
