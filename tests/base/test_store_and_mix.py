"""Content-addressed deltas, the deterministic split, curriculum order and seeded replay."""

import pytest

from evo.data.mix import build_mix, curriculum_order
from evo.data.records import Record
from evo.data.store import DataStore, delta_parts, delta_sha, holdout


def recs(n, cat="a", tag="x"):
    return [Record("completion", f"{tag} p{i}", f" c{i}", category=cat) for i in range(n)]


def test_store_roundtrip_is_content_addressed_and_immutable(tmp_path):
    store = DataStore(tmp_path)
    r = recs(5)
    sha = store.put(r)
    assert sha == delta_sha(r) and store.path(sha).exists()
    mtime = store.path(sha).stat().st_mtime_ns
    assert store.put(r) == sha and store.path(sha).stat().st_mtime_ns == mtime  # not rewritten
    assert store.get(sha) == r
    assert store.put(r[:4]) != sha


def test_store_detects_corruption(tmp_path):
    store = DataStore(tmp_path)
    sha = store.put(recs(3))
    other = store.put(recs(3, tag="y"))
    store.path(sha).write_bytes(store.path(other).read_bytes())
    with pytest.raises(ValueError, match="does not match its sha"):
        store.get(sha)


def test_split_is_deterministic_and_near_the_fraction():
    r = recs(1000)
    train, val = holdout(r, 0.1)
    assert holdout(list(reversed(r)), 0.1)[1] == list(reversed(val))  # by hash, not position
    assert 60 < len(val) < 140 and len(train) + len(val) == 1000


def test_three_way_split_keeps_the_v1_holdout_as_the_test_part():
    r = recs(1000)
    parts = delta_parts(r, 0.1, 0.1, "v2")
    assert parts.test == holdout(r, 0.1)[1]  # rows of older roots reported on the same records
    assert 60 < len(parts.val) < 140 and len(parts.train) + len(parts.val) + len(parts.test) == 1000
    assert not {x.sha for x in parts.val} & {x.sha for x in parts.test}
    assert delta_parts(list(reversed(r)), 0.1, 0.1, "v2").val == list(reversed(parts.val))
    with pytest.raises(ValueError, match="nothing to train on"):
        delta_parts(r, 0.5, 0.5)


def test_curriculum_orders_categories_and_shuffles_within():
    import random

    r = recs(20, "b", "b") + recs(20, "a", "a") + recs(5, "z", "z")
    out = curriculum_order(r, ["b", "a"], random.Random(0))
    assert [x.category for x in out] == ["b"] * 20 + ["a"] * 20 + ["z"] * 5
    assert [x.prompt for x in out[:20]] != [x.prompt for x in r[:20]]  # shuffled within b


def test_replay_is_seeded_and_spread_through_the_delta():
    delta, pool = recs(30, tag="new"), recs(100, tag="old")
    m1 = build_mix(delta, pool, 10, [], seed=3)
    m2 = build_mix(delta, list(reversed(pool)), 10, [], seed=3)
    assert m1.records == m2.records and (m1.n_delta, m1.n_replay) == (30, 10)
    pos = [i for i, r in enumerate(m1.records) if r.prompt.startswith("old")]
    assert len(pos) == 10 and pos[-1] > 30  # not bunched at the start
    assert build_mix(delta, pool, 10, [], seed=4).records != m1.records
    assert build_mix(delta, pool, 0, [], seed=3).n_replay == 0
    assert build_mix(delta, recs(3, tag="old"), 10, [], seed=3).n_replay == 3
