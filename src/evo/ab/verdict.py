"""The A/B round's verdict: sequential tests over distinct prompts whose error rates hold, and
what each verdict does to the candidate.

The tests. Among the counted decisive votes (which votes count: `evo.ab.tally`), let p be the
candidate's share. Votes are read only at looks fixed in advance: after every `look_every` decisive
votes, at most `max_looks` times. At each look, three boundaries on the candidate's wins:

- "candidate better" / "candidate worse": a two-sided sign test of p = 0.5, exact binomial critical
  values under an O'Brien-Fleming-type alpha-spending function (Lan-DeMets), so a false "better"
  or "worse" over all the looks of a round has chance at most `alpha`.
- "candidate not worse" (non-inferiority): p > `min_share` with confidence 1 - `alpha`, one-sided,
  with its own O'Brien-Fleming spending computed exactly under p = `min_share`. Its region holds the
  "better" region, so the chance that a round *promotes* a candidate whose share is `min_share` or
  less is at most `alpha` (and smaller the worse it is), however often the statistics are read.

What each verdict does (`action`): "better" and "not worse" promote; "worse", and a plan that ran
all its looks without a crossing, reject (the champion stays); "undecided" (the prompts ran out
before the plan's last look) keeps the champion and leaves the candidate pending, with an estimate
of the distinct prompts a decision would still need (`prompts_needed`).

The plan is sized in decisive votes (`plan_for`): from the prompts a round can ask and the share of
them expected to be ties (stated: `ab.tie_rate`), its last look is at the decisive votes the round
reaches with probability `REACH`. A budget whose plan could never promote is refused (`PlanTooSmall`).
`verdict_chances` is each verdict's exact chance for a given share and tie rate;
`bench/bench_ab_calibration.py` reports it, checked by simulated rounds through the server's tally.

Thumbs are reported per arm with Wilson intervals (`wilson`), not tested: a response's rating says
nothing about the other arm's answer to the same prompt, and repeated prompts make ratings dependent.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from typing import Optional

from evo.config import ConfigError

CANDIDATE_BETTER, CANDIDATE_WORSE, UNDECIDED = "candidate better", "candidate worse", "undecided"
NOT_WORSE = "candidate not worse"  # share of decisive votes above min_share with confidence 1 - alpha
NO_DIFFERENCE = "no difference found"  # all looks done, nothing crossed (a plan without min_share)
NOT_SHOWN = "not shown within the margin"  # all looks done, nothing crossed (a plan with min_share)
TEST_NAME = "sequential sign test over distinct prompts (O'Brien-Fleming spending, exact binomial)"
PROMOTE, REJECT, HOLD = "promote", "reject", "hold"
ACTIONS = {CANDIDATE_BETTER: PROMOTE, NOT_WORSE: PROMOTE, CANDIDATE_WORSE: REJECT, NO_DIFFERENCE: REJECT,
           NOT_SHOWN: REJECT, UNDECIDED: HOLD}
REACH = 0.9  # the plan's last look is at the decisive votes a round reaches with this probability


class PlanTooSmall(ConfigError):
    """A round too small for any look of its plan that could promote (a bad --budget or ab section: the
    CLI reports it as a config error); the message says how many prompts it needs."""


@dataclass(frozen=True)
class TestPlan:
    """Fixed before a round's first vote."""

    __test__ = False  # a statistical test's plan, not a pytest class
    alpha: float = 0.05  # chance of a wrong "better"/"worse" verdict over the whole round; of promoting at min_share
    look_every: int = 10  # decisive votes (distinct prompts) between looks
    max_looks: int = 12  # looks in all; the last one is at look_every * max_looks decisive votes
    min_share: Optional[float] = 0.45  # "not worse": the candidate's share of decisive votes above this; None: off
    tie_rate: float = 0.5  # share of prompts expected to be ties, to size the plan and estimate prompts needed

    def __post_init__(self):
        if not 0 < self.alpha < 1 or self.look_every < 1 or self.max_looks < 1:
            raise ValueError(f"test plan: needs 0 < alpha < 1, look_every >= 1, max_looks >= 1, got {self}")
        if self.min_share is not None and not 0 < self.min_share < 0.5:
            raise ValueError(f"test plan: min_share must be between 0 and 0.5 (or None), got {self.min_share}")
        if not 0 <= self.tie_rate < 1:
            raise ValueError(f"test plan: tie_rate must be at least 0 and below 1, got {self.tie_rate}")

    @property
    def looks(self) -> list[int]:
        """Decisive votes at each look."""
        return [self.look_every * (j + 1) for j in range(self.max_looks)]

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "look_every": self.look_every, "max_looks": self.max_looks,
                "min_share": self.min_share, "tie_rate": self.tie_rate,
                "critical_wins": [list(c) if c else None for c in critical_wins(self)],
                "promote_wins": list(promote_wins(self))}


def _log_pmf(n: int, k: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def reach_chance(prompts: int, tie_rate: float, n: int) -> float:
    """The chance that `prompts` distinct prompts, each a tie with probability `tie_rate`, give at
    least `n` decisive votes."""
    if n <= 0:
        return 1.0
    if n > prompts:
        return 0.0
    if tie_rate == 0:
        return 1.0
    return min(1.0, sum(math.exp(_log_pmf(prompts, k, 1 - tie_rate)) for k in range(n, prompts + 1)))


def plan_for(prompts: int, base: TestPlan = TestPlan(), tie_rate: Optional[float] = None) -> TestPlan:
    """The plan of a round that can ask at most `prompts` distinct prompts (each votes once), of which
    a share `tie_rate` (default: the base plan's) is expected to be ties: its last look is at the most
    decisive votes (a multiple of look_every) the round reaches with probability REACH, so the alpha
    is spent by the time the prompts run out. Refused (`PlanTooSmall`) when no look of it could promote."""
    t = base.tie_rate if tie_rate is None else tie_rate
    plan = _sized(prompts, base, t)
    if plan is None:
        need = min_prompts(base, t)
        smallest = _sized(need, base, t)
        first = next(n for n, u in zip(smallest.looks, promote_wins(smallest)) if u is not None)
        raise PlanTooSmall(
            f"A/B budget of {prompts} distinct prompts: at a tie rate of {t:.0%} (ab.tie_rate) they give about "
            f"{prompts * (1 - t):.0f} decisive votes, and the test's first look that can promote needs "
            f"{first} decisive votes with probability {REACH:.0%}: ask at least {need} distinct prompts "
            f"(--budget), or state a lower ab.tie_rate if fewer ties are expected")
    return plan


def _sized(prompts: int, base: TestPlan, tie_rate: float) -> Optional[TestPlan]:
    """`plan_for`'s plan, or None when it would have no look that could promote."""
    looks = 0
    while looks < base.max_looks and reach_chance(prompts, tie_rate, base.look_every * (looks + 1)) >= REACH:
        looks += 1
    if looks == 0:
        return None
    plan = replace(base, tie_rate=tie_rate, max_looks=looks)
    return plan if any(u is not None for u in promote_wins(plan)) else None


@functools.lru_cache(maxsize=64)
def min_prompts(base: TestPlan, tie_rate: float) -> int:
    """The fewest distinct prompts whose plan (`plan_for`) can promote at some look."""
    n, most = base.look_every, math.ceil(2 * base.look_every * base.max_looks / (1 - tie_rate)) + 100
    while _sized(n, base, tie_rate) is None:
        if n > most:
            raise ValueError(f"test plan {base}: no number of prompts gives a look that can promote")
        n += 1
    return n


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
    action: str = HOLD  # what the round does with the candidate: promote, reject or hold (pending)
    more_prompts: Optional[int] = None  # undecided: about how many more distinct prompts a decision needs

    def to_json(self) -> dict:
        return asdict(self)


def _spend(alpha: float, t: float) -> float:
    """Alpha spent by information fraction t (O'Brien-Fleming type): 2 - 2 Phi(z_{alpha/2} / sqrt(t))."""
    return math.erfc(_z(alpha) / math.sqrt(t) / math.sqrt(2))


def _binomial_step(dist: list[float], m: int, p: float = 0.5) -> list[float]:
    """The distribution of wins after m more votes, each a win with probability p."""
    pmf = [math.exp(_log_pmf(m, i, p)) for i in range(m + 1)]
    out = [0.0] * (len(dist) + m)
    for k, pk in enumerate(dist):
        if pk:
            for i, pi in enumerate(pmf):
                out[k + i] += pk * pi
    return out


@functools.lru_cache(maxsize=64)
def critical_wins(plan: TestPlan) -> tuple[Optional[tuple[int, int]], ...]:
    """Per look: (low, high) such that candidate wins <= low ("worse") or >= high ("better")
    decides; None where the alpha that may be spent by then allows no verdict. Computed exactly
    under p = 0.5, for the walks that have not crossed at an earlier look."""
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


@functools.lru_cache(maxsize=64)
def promote_wins(plan: TestPlan) -> tuple[Optional[int], ...]:
    """Per look: the fewest candidate wins that promote ("better", or "not worse"); None where no
    promotion is possible at that look. Without min_share these are the "better" boundaries. With
    it: the widest region {wins >= u}, holding the "better" region, whose chance under p = min_share
    over the walks still running (not promoted, not "worse" earlier) is within the one-sided
    O'Brien-Fleming spending of alpha, so P(promoted | p <= min_share) <= alpha."""
    bounds = critical_wins(plan)
    if plan.min_share is None:
        return tuple(b[1] if b else None for b in bounds)
    looks, alive, spent, out, n_prev = plan.looks, [1.0], 0.0, [], 0
    for n, b in zip(looks, bounds):
        alive = _binomial_step(alive, n - n_prev, plan.min_share)
        n_prev = n
        allowed = _spend(plan.alpha, n / looks[-1]) - spent + 1e-15
        u = b[1] if b else n + 1  # the "better" region promotes whatever the margin allows
        mass = sum(alive[u:])
        if mass > allowed:
            raise ValueError(f"test plan {plan}: the 'better' region at {n} decisive votes is more likely at "
                             f"p = {plan.min_share} than the non-inferiority spending allows")
        floor = b[0] if b else -1
        while u - 1 > floor and mass + alive[u - 1] <= allowed:
            u -= 1
            mass += alive[u]
        spent += mass
        alive = [0.0 if (k >= u or k <= floor) else p for k, p in enumerate(alive)]
        out.append(u if u <= n else None)
    return tuple(out)


def _at_look(plan: TestPlan, j: int, wins: int) -> Optional[str]:
    """The verdict a look reads, or None when nothing crosses there."""
    b, u = critical_wins(plan)[j], promote_wins(plan)[j]
    if b is not None and wins >= b[1]:
        return CANDIDATE_BETTER
    if b is not None and wins <= b[0]:
        return CANDIDATE_WORSE
    if u is not None and wins >= u and plan.min_share is not None:
        return NOT_WORSE
    return None


def _rule(plan: TestPlan, j: int) -> str:
    b, u = critical_wins(plan)[j], promote_wins(plan)[j]
    parts = ([f"better at >= {b[1]}", f"worse at <= {b[0]}"] if b else []) + (
        [f"not worse at >= {u}"] if u is not None and plan.min_share is not None else [])
    return ", ".join(parts) or "no verdict possible at this look"


def prompts_needed(plan: TestPlan, decisive: int, prompts: Optional[int] = None) -> tuple[int, float]:
    """About how many more distinct prompts bring a round at `decisive` votes (on `prompts` distinct
    prompts so far) to the plan's last look, where it always decides, and the tie rate that assumes:
    the share of ties so far, shrunk toward the stated tie rate (two prompts' worth of weight); the
    stated tie rate when `prompts` is not known."""
    if prompts is None:
        t = plan.tie_rate
    else:
        t = (max(0, prompts - decisive) + 2 * plan.tie_rate) / (prompts + 2)
    return max(0, math.ceil((plan.looks[-1] - decisive) / (1 - t))), t


def verdict_of(cum_wins: list[int], plan: TestPlan, prompts: Optional[int] = None) -> Verdict:
    """The verdict from the running count of candidate wins over the decisive counted votes
    (`cum_wins[i]`: wins among the first i+1): each look reads one entry; the first look that
    crosses decides. `prompts`: distinct prompts counted so far, ties included (for the estimate of
    the prompts an undecided round still needs; default: the plan's tie rate)."""
    looks_done = 0
    for j, n in enumerate(plan.looks):
        if len(cum_wins) < n:
            break
        looks_done = j + 1
        wins = cum_wins[n - 1]
        found = _at_look(plan, j, wins)
        if found is not None:
            p = binomial_two_sided_p(wins, n)
            margin = f"; above {plan.min_share:g} with {1 - plan.alpha:.0%} confidence" if found == NOT_WORSE else ""
            return Verdict(found, TEST_NAME, p, n,
                           f"look {j + 1} of {plan.max_looks}: candidate preferred on {wins} of {n} distinct "
                           f"prompts ({_rule(plan, j)}){margin}, nominal p = {p:.3g}",
                           looks_done, wilson(wins, n, plan.alpha), ACTIONS[found])
    n = len(cum_wins)
    wins = cum_wins[-1] if n else 0
    ci = wilson(wins, n, plan.alpha)
    p = binomial_two_sided_p(wins, n) if n else None
    if looks_done == plan.max_looks:
        end = NO_DIFFERENCE if plan.min_share is None else NOT_SHOWN
        shown = "better" if plan.min_share is None else f"better or above {plan.min_share:g}"
        return Verdict(end, TEST_NAME, p, n, f"all {plan.max_looks} looks done, none crossed: candidate preferred "
                       f"on {wins} of {n} distinct prompts, not shown {shown}, so the champion stays",
                       looks_done, ci, ACTIONS[end])
    more, t = prompts_needed(plan, n, prompts)
    nxt = plan.looks[looks_done]
    return Verdict(UNDECIDED, TEST_NAME, p, n, f"{n} decisive votes on distinct prompts; look {looks_done + 1} of "
                   f"{plan.max_looks} at {nxt}; a decision needs the last look at {plan.looks[-1]} at the latest, "
                   f"about {more} more distinct prompts at {'the stated' if prompts is None else 'the seen'} tie "
                   f"rate of {t:.0%}", looks_done, ci, HOLD, more)


def verdict_chances(plan: TestPlan, share: float, prompts: int, tie_rate: float) -> dict[str, float]:
    """The exact chance of each verdict of a round of `prompts` distinct prompts, each a tie with
    probability `tie_rate`, else won by the candidate with probability `share`. The decisive votes'
    count is independent of their signs, so a look is reached (with chance `reach_chance`) whatever
    the walk did; a walk's first crossing among the looks reached is the verdict."""
    out = dict.fromkeys(ACTIONS, 0.0)
    alive, n_prev, reached_before = [1.0], 0, 1.0
    for j, n in enumerate(plan.looks):
        reached = reach_chance(prompts, tie_rate, n)
        out[UNDECIDED] += sum(alive) * (reached_before - reached)  # the prompts ran out before this look
        alive = _binomial_step(alive, n - n_prev, share)
        n_prev = n
        for k, pk in enumerate(alive):
            found = _at_look(plan, j, k)
            if found is not None and pk:
                out[found] += pk * reached
                alive[k] = 0.0
        reached_before = reached
    out[NO_DIFFERENCE if plan.min_share is None else NOT_SHOWN] += sum(alive) * reached_before
    return out


def promote_chance(plan: TestPlan, share: float, prompts: int, tie_rate: float) -> float:
    """The exact chance that such a round promotes the candidate."""
    return sum(v for k, v in verdict_chances(plan, share, prompts, tie_rate).items() if ACTIONS[k] == PROMOTE)
