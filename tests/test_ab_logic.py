"""A/B logic without Ray: routing, the append-only feedback log, statistics and verdicts."""

import json
import multiprocessing as mp

import pytest

from evo.serving.feedback import FeedbackError, FeedbackStore
from evo.serving.router import ABRouter
from evo.serving.stats import (
    CANDIDATE_BETTER,
    CANDIDATE_WORSE,
    UNDECIDED,
    TestPlan,
    binomial_two_sided_p,
    pairwise_verdict,
    summarize,
    thumbs_verdict,
    two_proportion_p,
    wilson,
)


def test_known_values():
    lo, hi = wilson(7, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.3968, 0.8922)
    assert wilson(0, 0) == (0.0, 1.0)
    assert binomial_two_sided_p(9, 10) == pytest.approx(0.021484375)
    assert binomial_two_sided_p(5, 10) == pytest.approx(1.0)
    assert two_proportion_p(60, 100, 40, 100) == pytest.approx(0.004678, rel=1e-3)


PLAN = TestPlan(alpha=0.05, min_samples=30, max_looks=5)  # 0.005 per test


@pytest.mark.parametrize("cand,champ,verdict", [
    (20, 5, UNDECIDED),          # too few votes, however lopsided
    (25, 15, UNDECIDED),         # enough votes, not significant
    (40, 10, CANDIDATE_BETTER),  # p ~ 2e-5
    (10, 40, CANDIDATE_WORSE),
    (33, 17, UNDECIDED),         # p ~ 0.03: significant at 0.05 once, not at the per-look level
])
def test_pairwise_verdict_table(cand, champ, verdict):
    assert pairwise_verdict(cand, champ, PLAN).verdict == verdict


def test_thumbs_verdict_needs_samples_on_both_arms():
    assert thumbs_verdict(29, 29, 0, 100, PLAN).verdict == UNDECIDED
    assert thumbs_verdict(80, 100, 40, 100, PLAN).verdict == CANDIDATE_BETTER
    assert thumbs_verdict(40, 100, 80, 100, PLAN).verdict == CANDIDATE_WORSE


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
    events += [{"kind": "pairwise", "pair_id": f"p{i}", "winner": "candidate"} for i in range(45)]
    events += [{"kind": "pairwise", "pair_id": f"q{i}", "winner": "champion"} for i in range(5)]
    events += [{"kind": "pairwise", "pair_id": "t", "winner": "tie"}]
    s = summarize(events, PLAN)
    assert s["arms"]["candidate"]["requests"] == 5 and s["arms"]["champion"]["requests"] == 5
    assert s["arms"]["candidate"]["thumbs_up"] == 1 and s["arms"]["champion"]["thumbs_down"] == 1
    assert s["pairwise"]["ties"] == 1 and s["pairwise"]["candidate_win_rate"] == pytest.approx(0.9)
    assert s["verdict"]["verdict"] == CANDIDATE_BETTER and s["verdict"]["test"] == "sign test"
    json.dumps(s)  # served as JSON as it is
