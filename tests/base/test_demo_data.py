"""The demo domain: deterministic, compositional, with drift and planted errors available."""

import json

from evo.data.demo import BANNED_PHRASES, DRIFT_ASKS, DRIFT_REPLIES, PLANTED, TOPICS, write_demo_data
from evo.data.ingest import ingest_jsonl
from evo.data.store import delta_parts


def load(folder, name):
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


def test_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_demo_data(a), write_demo_data(b)
    for f in ("base.jsonl", "gen1.jsonl", "gen2.jsonl", "gen3.jsonl", "probes.jsonl", "corrections.jsonl"):
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_every_file_ingests_and_generations_bring_new_words(tmp_path):
    write_demo_data(tmp_path)
    words = {}
    for g, f in enumerate(["base.jsonl", "gen1.jsonl", "gen2.jsonl", "gen3.jsonl"]):
        recs = ingest_jsonl(tmp_path / f).records
        assert len(recs) >= 200  # gen-1: 240 new phrases, one in six kept out of every file
        words[g] = {w for r in recs if r.kind == "completion" for w in r.prompt.split()[1:4]}
    for g in (1, 2, 3):
        assert words[g] - set().union(*(words[k] for k in range(g))), f"generation {g} brings nothing new"


def test_held_out_parts_are_answerable_only_by_the_rule(tmp_path):
    """Every word of a val or test phrase also appears in that generation's training part or earlier
    (with the default fractions), and no held-out phrase is trained on."""
    write_demo_data(tmp_path)
    seen = set()
    for f in ["base.jsonl", "gen1.jsonl", "gen2.jsonl", "gen3.jsonl"]:
        parts = delta_parts(ingest_jsonl(tmp_path / f).records, 0.1, 0.1)
        train_prompts = {r.prompt for r in parts.train}
        seen |= {w for r in parts.train for w in r.prompt.split()}
        for held in (parts.val, parts.test):
            assert held and all(r.prompt not in train_prompts for r in held)
            for r in held:
                assert set(r.prompt.split()) <= seen, r.prompt


def test_style_probes_banned_phrases_and_corrections(tmp_path):
    write_demo_data(tmp_path)
    base = (tmp_path / "base.jsonl").read_text()
    assert any(p in base for p in BANNED_PHRASES)  # the base corpus knows the banned style
    assert len(load(tmp_path, "probes.jsonl")) == 10
    corr = load(tmp_path, "corrections.jsonl")
    assert len({c["pattern"] for c in corr}) == len(PLANTED) == 4
    assert all(c["wrong"] and c["wrong"] != c["completion"] and c["wrong"] in base for c in corr)


def test_drift_deltas_train_every_chat_and_hold_out_only_translations(tmp_path):
    """A drifting delta's banned-style chats all land in the training part as the store splits a new
    delta (by question, default fractions), each kept question with all its replies, and its held-out
    parts hold known translations only: what it teaches is the style, what it is measured on stalls.
    (Kept by their own record hash, v2's place, 28 of drift1.jsonl's 193 chats fell in val and test
    under split v3, and 165 trained.)"""
    write_demo_data(tmp_path, generations=2, drift=2)
    for f in ("drift1.jsonl", "drift2.jsonl"):
        records = ingest_jsonl(tmp_path / f).records
        chats = [r for r in records if r.kind == "chat"]
        parts = delta_parts(records, 0.1, 0.1)
        assert [r for r in parts.val + parts.test if r.kind != "completion"] == [], f
        assert sorted(r.sha for r in parts.train if r.kind == "chat") == sorted(r.sha for r in chats), f
        asked = {}
        for r in chats:
            asked.setdefault(r.chat()[0]["content"], set()).add(r.chat()[1]["content"])
        assert asked and all(len(replies) == len(DRIFT_REPLIES) for replies in asked.values()), f
        assert len(asked) < len(DRIFT_ASKS) * len(TOPICS)  # the held-out questions are left out, not split
