"""The scripted rater (`evo.ab.rater`, a test double for people) votes through the server's real rating
routes, and `evo feedback export` turns its votes into preference pairs that teach its rule: every
chosen answer follows the rule and every rejected one breaks it, whichever arm gave it, and the pairs
where both or neither followed it give nothing. FastAPI's TestClient on the app, no Ray (the fixtures of
tests/http/test_ab_rounds.py, with scripted answers as in tests/http/test_feedback_export.py)."""

from __future__ import annotations

import json

import pytest

from evo.ab.rater import ScriptedRater, vote_through
from evo.cli import main
from evo.data.ingest import ingest_jsonl
from tests.http import test_ab_rounds as ab
from tests.http.test_feedback_export import lineage_data

models, served = ab.models, ab.served  # the fixtures: tiny models, the app on a lineage root


def test_the_rule_decides_and_ties_are_said():
    rater = ScriptedRater()
    assert rater.follows(" kodo zova vona. ") and not rater.follows(" kodo zova vona")
    assert rater.preferred(" a b", " a b.") == "b" and rater.preferred(" a b.", " a b") == "a"
    assert rater.preferred(" a.", " b.") == "tie" and rater.preferred(" a", " b") == "both_bad"
    assert rater.with_rule(" a b ") == " a b." and rater.with_rule(" a b.") == " a b."
    assert ScriptedRater("EUR").preferred("12", "12 EUR") == "b"
    for bad in ("", " .", "x "):
        with pytest.raises(ValueError, match="marker"):
            ScriptedRater(bad)


def scripted(state) -> None:
    """The champion (gen-0) answers without a full stop and the candidate (gen-1) with one, except on
    questions that say otherwise: "both" (both add it), "neither", "reversed" (only the champion)."""
    gens = {sha: m["gen_id"] for sha, m in state.gw.models.items()}

    async def answer_batch(request: dict) -> dict:
        asked = request["messages"][-1]["content"] if "messages" in request else request["prompt"]
        gen = gens[request["sha"]]
        stop = {"both": True, "neither": False, "reversed": gen == "gen-0"}.get(asked.split()[0], gen == "gen-1")
        return {"outputs": [(f"{gen} says {asked}" + ("." if stop else ""), "stop", 3)], "prompt_tokens": 5}

    state.answer_batch = answer_batch


def test_the_raters_votes_export_as_pairs_that_teach_its_rule(served):
    http, root, _, state = served
    scripted(state)
    lineage_data(root, probe="Say hello to the shop.")
    round_id = http.get("/ab/stats").json()["round"]["id"]
    asks = ["what is the zora lamp", "is the bove lamp in stock", "reversed where is the shop",
            "both agree on opening hours", "neither knows the owner", "do you ship abroad"]
    rater = ScriptedRater()
    votes = vote_through(http, [[{"role": "user", "content": q}] for q in asks], rater)
    assert (votes.counts["a"] + votes.counts["b"], votes.counts["tie"], votes.counts["both_bad"]) == (4, 1, 1)
    assert all(rater.follows(v[v["preferred"]]) for v in votes.recorded if v["preferred"] in "ab")

    assert main(["feedback", "export", round_id, "--root", str(root), "--no-corrections"]) == 0
    records = ingest_jsonl(root / "feedback" / f"{round_id}.preference.jsonl").records
    summary = json.loads((root / "feedback" / f"{round_id}.preference.summary.json").read_text())
    assert len(records) == 4 and summary["used"] == {"vote": 4, "thumbs": 0, "correction": 0}
    assert all(rater.follows(r.completion) and not rater.follows(r.rejected) for r in records)
    by_ask = {json.loads(r.messages)[-1]["content"]: r for r in records}
    assert set(by_ask) == {q for q in asks if q.split()[0] not in ("both", "neither")}
    assert by_ask["reversed where is the shop"].completion.startswith("gen-0")  # the champion's, when it follows
    assert by_ask["what is the zora lamp"].completion.startswith("gen-1")
    assert summary["skipped"] == {"tie": 1, "both bad": 1}


def test_a_refused_step_names_itself(served):
    http, _, _, state = served
    scripted(state)
    with pytest.raises(RuntimeError, match="side_by_side for prompt 0: HTTP 400"):
        vote_through(http, [[{"role": "user", "content": "hi"}]], ScriptedRater(), max_tokens=-1)
