"""A/B statistics: a sequential sign test over distinct prompts whose error rate holds.

What is counted. One vote per distinct prompt per round: the first side-by-side vote on a prompt
counts, later votes on the same prompt are kept in the log but not counted (at temperature 0 a
repeated prompt gets the same two answers, so its repeats are not independent evidence), and a
second vote on the same pair is refused before it is written. Ties use up the prompt and are not
decisive.

The test. Among the counted decisive votes, "the candidate is preferred" is tested against
p = 0.5 (a sign test) at looks fixed in advance: after every `look_every` decisive votes, at most
`max_looks` times. The critical values come from exact binomial sums under p = 0.5 with an
O'Brien-Fleming-type alpha-spending function (Lan-DeMets), so the chance of any false "better" or
"worse" verdict over all the looks of a round is at most `alpha`, however often the statistics are
read: a verdict is only ever taken at a scheduled look, and the first look that crosses decides.
After the last look without a crossing the round ends with "no difference found".
`bench/bench_ab_calibration.py` checks both error rates by simulation.

Thumbs are reported per arm with Wilson intervals, not tested: a response's rating says nothing
about the other arm's answer to the same prompt, and repeated prompts make ratings dependent.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Optional

from evo.ab.router import ARMS

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


def prompt_key(body: dict) -> str:
    """What makes two side-by-side requests the same prompt: the prompt text or the messages, with
    whitespace and case folded (sampling settings do not make a prompt new)."""
    what = body.get("messages") if body.get("messages") is not None else body.get("prompt")
    canon = json.dumps(what, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(" ".join(canon.lower().split()).encode()).hexdigest()[:24]


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


class Tally:
    """Every number `/ab/stats` reports, kept up to date one event at a time (`add`, O(1) each), so
    a vote and a stats read cost the same with 100 votes in the log as with 100,000.

    What counts is as before: the first vote of each distinct prompt (a log without prompt keys: each
    pair is its own prompt), never a second vote on one pair; thumbs count for the arm whose
    response they rate, whenever in the log that response's event comes."""

    def __init__(self):
        self.arm_of: dict[str, str] = {}  # response id -> arm
        self.unplaced: dict[str, list[str]] = {}  # thumbs on a response not seen yet: response id -> values
        self.arms = {a: {"requests": 0, "thumbs_up": 0, "thumbs_down": 0, "pairwise_wins": 0} for a in ARMS}
        self.pairs: dict[str, dict] = {}  # pair id -> the "pair" event that showed it
        self.voted: set[str] = set()  # pair ids with a vote
        self.prompts: set[str] = set()
        self.counted = self.ties = self.all_votes = 0
        self.cum_wins: list[int] = []  # candidate wins among the first i+1 decisive counted votes
        self.sha_wins: dict[tuple[str, str], int] = {}  # (winner's sha, loser's sha) -> counted decisive votes
        self.events = 0

    def add(self, e: dict) -> None:
        self.events += 1
        kind = e["kind"]
        if kind == "response":
            self.arm_of[e["response_id"]] = e["arm"]
            self.arms[e["arm"]]["requests"] += 1
            for value in self.unplaced.pop(e["response_id"], []):
                self.arms[e["arm"]]["thumbs_" + value] += 1
        elif kind == "thumbs":
            arm = self.arm_of.get(e["response_id"])
            if arm is None:
                self.unplaced.setdefault(e["response_id"], []).append(e["value"])
            else:
                self.arms[arm]["thumbs_" + e["value"]] += 1
        elif kind == "pair":
            self.pairs[e["pair_id"]] = e
        elif kind == "pairwise":
            self.all_votes += 1
            if e["pair_id"] in self.voted:
                return
            self.voted.add(e["pair_id"])
            key = e.get("prompt_key") or e["pair_id"]
            if key in self.prompts:
                return
            self.prompts.add(key)
            self.counted += 1
            if e["winner"] == "tie":
                self.ties += 1
                return
            self.arms[e["winner"]]["pairwise_wins"] += 1
            shas = (self.pairs.get(e["pair_id"]) or {}).get("shas") or {}
            loser = "champion" if e["winner"] == "candidate" else "candidate"
            if shas.get(e["winner"]) and shas.get(loser) and shas[e["winner"]] != shas[loser]:
                key = (shas[e["winner"]], shas[loser])
                self.sha_wins[key] = self.sha_wins.get(key, 0) + 1
            self.cum_wins.append((self.cum_wins[-1] if self.cum_wins else 0) + (e["winner"] == "candidate"))

    def summary(self, plan: TestPlan) -> dict:
        """Per-arm counts and rates, and the round's verdict so far: O(looks), not O(events)."""
        arms = {a: dict(v) for a, v in self.arms.items()}
        for a in arms.values():
            rated = a["thumbs_up"] + a["thumbs_down"]
            a["thumbs_up_rate"] = a["thumbs_up"] / rated if rated else None
            a["thumbs_up_ci"] = wilson(a["thumbs_up"], rated, plan.alpha)
        cw, hw = arms["candidate"]["pairwise_wins"], arms["champion"]["pairwise_wins"]
        return {
            "arms": arms,
            "pairwise": {"candidate_wins": cw, "champion_wins": hw, "ties": self.ties,
                         "distinct_prompts": self.counted, "votes_not_counted": self.all_votes - self.counted,
                         "candidate_win_rate": cw / (cw + hw) if cw + hw else None,
                         "candidate_win_ci": wilson(cw, cw + hw, plan.alpha)},
            "verdict": verdict_of(self.cum_wins, plan).to_json(),
            "plan": plan.to_json(),
        }


def bradley_terry(wins: dict[tuple[str, str], int], iters: int = 500) -> list[dict]:
    """Strengths of the models in `wins` ((winner, loser) -> votes): the Bradley-Terry maximum
    likelihood fit by Hunter's MM updates, with half a win and half a loss against the average added
    to every model so that an unbeaten one stays finite. Log-scale strengths, centred on 0, and 95%
    intervals from the inverse observed information (the mean held at 0); best first."""
    models = sorted({m for pair in wins for m in pair})
    if not models:
        return []
    k = len(models)
    idx = {m: i for i, m in enumerate(models)}
    n = [[0.0] * k for _ in range(k)]  # n[i][j]: votes between i and j
    w = [0.5] * k  # wins, with the half-win prior
    for (a, b), c in wins.items():
        n[idx[a]][idx[b]] += c
        n[idx[b]][idx[a]] += c
        w[idx[a]] += c
    p = [1.0] * k
    for _ in range(iters):
        new = []
        for i in range(k):
            denom = 1.0 / (p[i] + 1.0)  # the prior's game against an average (strength 1) model
            denom += sum(n[i][j] / (p[i] + p[j]) for j in range(k) if j != i and n[i][j])
            new.append(w[i] / denom)
        g = math.exp(sum(math.log(x) for x in new) / k)
        p = [x / g for x in new]
    theta = [math.log(x) for x in p]
    info = [[0.0] * k for _ in range(k)]  # observed information of the log strengths
    for i in range(k):
        info[i][i] += p[i] / (p[i] + 1.0) ** 2  # the prior's game
        for j in range(k):
            if j != i and n[i][j]:
                v = n[i][j] * p[i] * p[j] / (p[i] + p[j]) ** 2
                info[i][i] += v
                info[i][j] -= v
    # the strengths are centred (they sum to 0): invert the information with that direction pinned,
    # then project onto the centred space
    inv = _inverse([[info[i][j] + 1.0 for j in range(k)] for i in range(k)])
    cov = [[inv[i][j] - sum(inv[i]) / k - sum(inv[r][j] for r in range(k)) / k
            + sum(map(sum, inv)) / k / k for j in range(k)] for i in range(k)]
    rows = []
    for m in models:
        i = idx[m]
        se = math.sqrt(max(cov[i][i], 0.0))
        games = int(sum(n[i]))
        rows.append({"sha": m, "strength": theta[i], "interval": (theta[i] - 1.96 * se, theta[i] + 1.96 * se),
                     "votes": games, "wins": int(w[i] - 0.5)})
    return sorted(rows, key=lambda r: -r["strength"])


def _inverse(a: list[list[float]]) -> list[list[float]]:
    """Gauss-Jordan inverse of a small positive definite matrix."""
    k = len(a)
    m = [row[:] + [1.0 if i == j else 0.0 for j in range(k)] for i, row in enumerate(a)]
    for c in range(k):
        piv = max(range(c, k), key=lambda r: abs(m[r][c]))
        m[c], m[piv] = m[piv], m[c]
        d = m[c][c]
        m[c] = [x / d for x in m[c]]
        for r in range(k):
            if r != c and m[r][c]:
                f = m[r][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [row[k:] for row in m]


def counted_votes(events: list[dict]) -> list[str]:
    """The winners ("candidate", "champion", "tie") of the votes that count, in log order (see `Tally`)."""
    seen_pairs, seen_prompts, out = set(), set(), []
    for e in events:
        if e["kind"] != "pairwise" or e["pair_id"] in seen_pairs:
            continue
        seen_pairs.add(e["pair_id"])
        key = e.get("prompt_key") or e["pair_id"]
        if key in seen_prompts:
            continue
        seen_prompts.add(key)
        out.append(e["winner"])
    return out


def pairwise_verdict(winners: list[str], plan: TestPlan) -> Verdict:
    """The verdict of the looks reached so far: the first look whose wins cross its critical values."""
    cum: list[int] = []
    for w in winners:
        if w != "tie":
            cum.append((cum[-1] if cum else 0) + (w == "candidate"))
    return verdict_of(cum, plan)


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


def summarize(events: list[dict], plan: TestPlan) -> dict:
    """Per-arm counts and rates from the event log, and the round's verdict so far."""
    tally = Tally()
    for e in events:
        tally.add(e)
    return tally.summary(plan)
