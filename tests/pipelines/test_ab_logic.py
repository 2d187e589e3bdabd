"""A/B logic without Ray: routing, the append-only feedback log, statistics and verdicts."""

import json
import multiprocessing as mp

import pytest

from evo.ab.feedback import FeedbackError, FeedbackStore
from evo.ab.router import ABRouter
from evo.ab.tally import prompt_key, summarize
from evo.ab.verdict import (
    CANDIDATE_BETTER,
    CANDIDATE_WORSE,
    NO_DIFFERENCE,
    UNDECIDED,
    TestPlan,
    binomial_two_sided_p,
    critical_wins,
    plan_for,
    wilson,
)


def test_known_values():
    lo, hi = wilson(7, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.3968, 0.8922)
    assert wilson(0, 0) == (0.0, 1.0)
    assert binomial_two_sided_p(9, 10) == pytest.approx(0.021484375)
    assert binomial_two_sided_p(5, 10) == pytest.approx(1.0)


PLAN = TestPlan(alpha=0.05, look_every=10, max_looks=3, min_share=None)  # the sign test alone: looks at 10, 20, 30


def votes(cand: int, champ: int) -> list[str]:
    return ["candidate"] * cand + ["champion"] * champ


def verdict_after(winners: list[str], plan: TestPlan) -> str:
    """The verdict `/ab/stats` reports (`summarize`) after these votes, each on a prompt of its own."""
    events = [{"kind": "pairwise", "pair_id": f"p{i}", "prompt_key": f"k{i}", "winner": w} for i, w in enumerate(winners)]
    return summarize(events, plan)["verdict"]["verdict"]


@pytest.mark.parametrize("plan", [TestPlan(), plan_for(64)], ids=["default", "a pool of 64 prompts"])
def test_critical_values_spend_at_most_alpha_exactly(plan):
    """Under p = 0.5 the chance of crossing at any look, summed exactly over the binomial paths
    that reach it, is at most alpha; early looks demand more than late ones."""
    bounds = critical_wins(plan)
    alive, total, n_prev = {0: 1.0}, 0.0, 0
    for n, b in zip(plan.looks, bounds):
        for _ in range(n - n_prev):  # one more fair vote: wins stay or go up by one
            alive = {k: alive.get(k, 0) / 2 + alive.get(k - 1, 0) / 2 for k in range(max(alive) + 2)}
        n_prev = n
        if b is not None:
            total += sum(p for k, p in alive.items() if k <= b[0] or k >= b[1])
            alive = {k: p for k, p in alive.items() if b[0] < k < b[1]}
    assert 0.03 < total <= 0.05
    margins = [(n - b[1]) / n for n, b in zip(plan.looks, bounds) if b]
    assert margins == sorted(margins)  # the share of wins needed falls look by look


def test_a_round_is_planned_in_the_decisive_votes_its_prompts_reach():
    """64 distinct prompts at the stated 50% tie rate reach 20 decisive votes with 90% probability,
    not 30 (and never 60): the plan ends at look 2, so a candidate that wins 20 of 20 is called
    better there, where the default plan (120 votes) spends too little alpha to say anything. With
    no ties the same pool fills 6 looks; 500 prompts fill all 12."""
    assert plan_for(64).looks == [10, 20] and plan_for(64, tie_rate=0).looks == [10, 20, 30, 40, 50, 60]
    assert plan_for(500).max_looks == TestPlan().max_looks
    assert verdict_after(votes(20, 0), plan_for(64)) == CANDIDATE_BETTER
    assert verdict_after(votes(20, 0), TestPlan(min_share=None)) == UNDECIDED


@pytest.mark.parametrize("winners,verdict", [
    (votes(10, 0), UNDECIDED),           # look 1 (10 votes) may spend too little alpha for any verdict
    (votes(10, 0) + votes(6, 3), UNDECIDED),  # 19 votes: no look between 10 and 20
    (votes(10, 0) + votes(6, 4), CANDIDATE_BETTER),  # look 2: 16 of 20 (it decides at <= 4 or >= 16)
    (votes(2, 8) + votes(2, 8), CANDIDATE_WORSE),
    (votes(8, 2) + votes(7, 3), UNDECIDED),  # 15 of 20 is not enough at look 2
    (votes(8, 2) + votes(7, 3) + votes(3, 7), NO_DIFFERENCE),  # 18 of 30 after the last look (needs 21)
])
def test_verdicts_are_taken_only_at_the_planned_looks(winners, verdict):
    assert verdict_after(winners, PLAN) == verdict


def test_one_prompt_asked_again_and_again_is_one_vote():
    """What decided a round before: one prompt, 40 times side by side with the same vote each time."""
    key = prompt_key("user: Hello  there\nassistant:")  # the rendered prompt (evo.ab.tally.prompt_key)
    assert key == prompt_key("user: hello there\nassistant:")
    events = [{"kind": "pairwise", "pair_id": f"p{i}", "prompt_key": key, "winner": "champion"} for i in range(40)]
    events.append({"kind": "pairwise", "pair_id": "p0", "prompt_key": key, "winner": "champion"})  # a repeated vote
    s = summarize(events, TestPlan())
    assert s["verdict"]["verdict"] == UNDECIDED
    assert s["pairwise"]["distinct_prompts"] == 1 and s["pairwise"]["votes_not_counted"] == 40


def test_router_is_sticky_and_share_moves_users_one_way():
    r = ABRouter(0.3)
    users = [f"user-{i}" for i in range(2000)]
    first = {u: r.assign(u) for u in users}
    assert all(r.assign(u) == first[u] for u in users)
    share = sum(a == "candidate" for a in first.values()) / len(users)
    assert 0.25 < share < 0.35
    r.set_share(0.6)
    after = {u: r.assign(u) for u in users}
    assert all(after[u] == "candidate" for u in users if first[u] == "candidate")
    r.set_share(0.0)
    assert {r.assign(u) for u in users} == {"champion"}
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="candidate share"):
            r.set_share(bad)


def test_feedback_is_validated(tmp_path):
    store = FeedbackStore(tmp_path)
    with pytest.raises(FeedbackError, match="'kind'"):
        store.append({"kind": "like"})
    with pytest.raises(FeedbackError, match="'value'"):
        store.append({"kind": "thumbs", "response_id": "r1", "value": "meh"})
    with pytest.raises(FeedbackError, match="'winner'"):
        store.append({"kind": "pairwise", "pair_id": "p1", "winner": "both"})
    assert not store.path.exists()  # nothing written for a bad event


def _writer(root, n, tag):
    store = FeedbackStore(root)
    for i in range(n):
        store.append({"kind": "response", "response_id": f"{tag}-{i}", "arm": "champion", "pad": "x" * 3000})


def test_concurrent_writers_lose_nothing(tmp_path):
    procs = [mp.get_context("fork").Process(target=_writer, args=(tmp_path, 100, t)) for t in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    log = FeedbackStore(tmp_path).read()
    ids = [e["response_id"] for e in log.events]
    assert len(ids) == 400 and len(set(ids)) == 400 and log.torn_lines == 0


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path):
    store = FeedbackStore(tmp_path)
    store.append({"kind": "response", "response_id": "r1", "arm": "candidate"})
    with open(store.path, "ab") as f:
        f.write(b'{"kind": "respo')  # the writer died mid-line
    log = store.read()
    assert len(log.events) == 1 and log.torn_lines == 1
    store.append({"kind": "thumbs", "response_id": "r1", "value": "up"})
    assert [e["kind"] for e in store.read().events] == ["response", "thumbs"]


def test_summary_counts_per_arm_and_decides():
    events = [{"kind": "response", "response_id": f"r{i}", "arm": "candidate" if i % 2 else "champion"}
              for i in range(10)]
    events += [{"kind": "thumbs", "response_id": "r1", "value": "up"},
               {"kind": "thumbs", "response_id": "r2", "value": "down"},
               {"kind": "thumbs", "response_id": "unknown", "value": "up"}]  # no such response: ignored
    events += [{"kind": "pairwise", "pair_id": f"p{i}", "prompt_key": f"k{i}", "winner": "candidate"}
               for i in range(18)]
    events += [{"kind": "pairwise", "pair_id": f"q{i}", "prompt_key": f"j{i}", "winner": "champion"} for i in range(2)]
    events += [{"kind": "pairwise", "pair_id": f"r{i}", "prompt_key": "k0", "winner": "champion"} for i in range(9)]
    events += [{"kind": "pairwise", "pair_id": "t", "prompt_key": "t", "winner": "tie"}]
    s = summarize(events, PLAN)
    assert s["arms"]["candidate"]["requests"] == 5 and s["arms"]["champion"]["requests"] == 5
    assert s["arms"]["candidate"]["thumbs_up"] == 1 and s["arms"]["champion"]["thumbs_down"] == 1
    assert s["pairwise"]["ties"] == 1 and s["pairwise"]["candidate_win_rate"] == pytest.approx(0.9)
    v = s["verdict"]
    assert v["verdict"] == CANDIDATE_BETTER and v["looks"] == 2 and v["n"] == 20  # 18 of 20 at the second look
    assert s["pairwise"]["votes_not_counted"] == 9  # prompt k0 asked again: its first vote counts
    assert v["interval"][0] > 0.5 and "sequential sign test" in v["test"]
    assert s["plan"]["max_looks"] == 3 and len(s["plan"]["critical_wins"]) == 3
    json.dumps(s)  # served as JSON as it is


def test_two_replicas_tallies_follow_the_log_and_match_a_full_read(tmp_path):
    """Each store reads only what was written since it last looked: two replicas' stores, votes on
    either, a duplicate refused across them, a torn line fenced, and stats equal to a full re-read."""
    import random

    from evo.ab.feedback import DuplicateVote

    a, b = FeedbackStore(tmp_path, "r"), FeedbackStore(tmp_path, "r")
    rng = random.Random(0)
    for i in range(60):
        s = a if i % 2 else b
        s.append({"kind": "response", "response_id": f"x{i}", "arm": rng.choice(["champion", "candidate"])}, durable=False)
        s.append({"kind": "pair", "pair_id": f"p{i}", "a": "champion", "prompt_key": f"k{i % 45}"})
        if i == 30:
            with open(a.path, "ab") as f:
                f.write(b'{"kind": "pairw')  # a writer died mid-line
        s.append({"kind": "pairwise", "pair_id": f"p{i}", "prompt_key": f"k{i % 45}",
                  "winner": rng.choice(["champion", "candidate", "tie"])})
        (b if s is a else a).append({"kind": "thumbs", "response_id": f"x{i}", "value": rng.choice(["up", "down"])})
    with pytest.raises(FeedbackError, match="already has a vote"):
        b.append({"kind": "pairwise", "pair_id": "p1", "winner": "tie"}, once_per_pair=True)  # voted through a
    with pytest.raises(DuplicateVote):
        a.append({"kind": "pairwise", "pair_id": "p2", "winner": "tie"}, once_per_pair=True)
    assert a.pair("p7")["prompt_key"] == "k7" and b.pair("nope") is None
    full = FeedbackStore(tmp_path, "r").read()
    for store in (a, b):
        tally, torn = store.tally()
        assert tally.summary(PLAN) == summarize(full.events, PLAN) and torn == full.torn_lines == 1
    assert summarize(full.events, PLAN)["pairwise"]["votes_not_counted"] == 15  # prompts k0-k14 asked twice


def test_bradley_terry_recovers_known_strengths_and_its_intervals_cover():
    """Simulated votes between three generations of known strengths: the fit is centred, ranks them,
    and its 95% intervals cover the truth in about 95% of replications."""
    import math
    import random

    from evo.ab.leaderboard import bradley_terry

    true = {"x": 0.6, "y": 0.0, "z": -0.6}
    rng, covered, total = random.Random(1), 0, 0
    for _ in range(120):
        wins = {}
        for _ in range(300):
            a, b = rng.sample(sorted(true), 2)
            w, lose = (a, b) if rng.random() < 1 / (1 + math.exp(true[b] - true[a])) else (b, a)
            wins[(w, lose)] = wins.get((w, lose), 0) + 1
        rows = bradley_terry(wins)
        assert abs(sum(r["strength"] for r in rows)) < 1e-6
        for r in rows:
            total += 1
            covered += r["interval"][0] <= true[r["sha"]] <= r["interval"][1]
    assert [r["sha"] for r in rows] == ["x", "y", "z"]
    assert 0.88 <= covered / total <= 0.99, covered / total
    unbeaten = bradley_terry({("a", "b"): 5})  # finite, and not sure of it
    assert unbeaten[0]["sha"] == "a" and unbeaten[0]["interval"][0] < 0 < unbeaten[0]["strength"] < 3
