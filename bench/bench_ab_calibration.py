"""Does the A/B verdict hold its stated error rate? Simulated rounds through the production code.

    .venv/bin/python bench/bench_ab_calibration.py [--rounds 2000] [--diff 0.15]

Each simulated round is what `evo ab` does against a server: distinct prompts asked side by side one
after another, the judge's vote logged as the gateway logs it (a `pair` event with the prompt's key,
then the `pairwise` vote), and `/ab/stats` read every 10 pairs (the same `summarize` the server runs),
stopping at the first verdict or at the budget. A/A rounds have both arms equally good: a vote is a
tie with probability `--tie-rate`, else candidate or champion with equal chance. Rounds "with a known
difference" give the candidate `0.5 + diff` of the decisive votes. A third set repeats every prompt
four times (how rounds were played before votes were counted once per prompt) to show that
repeats no longer inflate the evidence.

Its last line is `false_better=<rate> power=<rate> at_diff=<difference>`. Goal: false "better" at
most alpha (0.05) and power at least 0.8 for a candidate that wins 65% of decisive votes, within
the default budget of `evo ab`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from report import update_section  # noqa: E402

from evo.ab.tally import summarize  # noqa: E402
from evo.ab.verdict import (  # noqa: E402
    CANDIDATE_BETTER,
    CANDIDATE_WORSE,
    NO_DIFFERENCE,
    UNDECIDED,
    TestPlan,
)

BUDGET = 300  # `evo ab --budget` default: distinct prompts asked at most
LOOK_EVERY_PAIRS = 10  # how often play() reads /ab/stats


def play_round(plan: TestPlan, p_candidate: float, tie_rate: float, rng: random.Random, repeats: int = 1) -> str:
    """One round as evo.ab_round.play runs it; returns the final verdict."""
    events: list[dict] = []
    pairs = 0
    for prompt in range(BUDGET):
        if rng.random() < tie_rate:  # at temperature 0 a prompt's repeats get the same two answers
            winner = "tie"
        else:
            winner = "candidate" if rng.random() < p_candidate else "champion"
        for _ in range(repeats):
            pair_id = f"pair-{pairs}"
            events.append({"kind": "pair", "pair_id": pair_id, "a": "champion", "prompt_key": f"k{prompt}"})
            events.append({"kind": "pairwise", "pair_id": pair_id, "prompt_key": f"k{prompt}", "winner": winner})
            pairs += 1
            if pairs % LOOK_EVERY_PAIRS == 0:
                verdict = summarize(events, plan)["verdict"]["verdict"]
                if verdict != UNDECIDED:
                    return verdict
            if pairs >= BUDGET:
                return summarize(events, plan)["verdict"]["verdict"]
    return summarize(events, plan)["verdict"]["verdict"]


def rates(plan: TestPlan, p: float, tie_rate: float, rounds: int, seed: int, repeats: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    verdicts = [play_round(plan, p, tie_rate, rng, repeats) for _ in range(rounds)]
    return {v: verdicts.count(v) / rounds for v in set(verdicts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2000, help="simulated rounds per setting (at least 1000)")
    ap.add_argument("--diff", type=float, default=0.15, help="the candidate's edge in decisive votes for power")
    ap.add_argument("--tie-rate", type=float, default=0.5, help="share of prompts both arms answer equally well")
    args = ap.parse_args()
    plan = TestPlan()
    t0 = time.perf_counter()
    aa = rates(plan, 0.5, args.tie_rate, args.rounds, seed=1)
    diff = rates(plan, 0.5 + args.diff, args.tie_rate, args.rounds, seed=2)
    repeated = rates(plan, 0.5, args.tie_rate, args.rounds, seed=3, repeats=4)
    seconds = time.perf_counter() - t0
    false_better, false_worse = aa.get(CANDIDATE_BETTER, 0.0), aa.get(CANDIDATE_WORSE, 0.0)
    power = diff.get(CANDIDATE_BETTER, 0.0)
    need = plan.look_every * plan.max_looks

    def row(name: str, r: dict[str, float]) -> str:
        cells = [r.get(v, 0.0) for v in (CANDIDATE_BETTER, CANDIDATE_WORSE, NO_DIFFERENCE, UNDECIDED)]
        return f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |"

    body = f"""
{args.rounds} simulated rounds per row through `evo.ab.tally.summarize` (the server's own code), each
played as `evo ab` plays one: up to {BUDGET} distinct prompts, `/ab/stats` read every {LOOK_EVERY_PAIRS} pairs, stop at the
first verdict. Plan: alpha {plan.alpha}, a look every {plan.look_every} decisive votes, {plan.max_looks} looks (the last at
{need} decisive votes); {args.tie_rate:.0%} of prompts are ties. {seconds:.0f} s in all.

| rounds | candidate better | candidate worse | no difference | undecided at the budget |
|---|---|---|---|---|
{row("A/A (both arms equal)", aa)}
{row(f"candidate wins {0.5 + args.diff:.0%} of decisive votes", diff)}
{row("A/A, every prompt asked 4 times", repeated)}

- False "better" {false_better:.3f} and false "worse" {false_worse:.3f}: together {false_better + false_worse:.3f}, at most alpha
  {plan.alpha} (goal). Power {power:.3f} for a 15-point edge (goal: at least 0.8).
- Repeats are counted once, so asking each prompt 4 times only uses the budget up faster (a quarter
  of the distinct prompts): it cannot make an A/A round look decided.
"""
    update_section("ab-calibration", body)
    print(body)
    print(f"false_better={false_better:.4f} power={power:.4f} at_diff={args.diff:g}")


if __name__ == "__main__":
    main()
