"""`evo feedback export ROUND` on a feedback log the server's own routes wrote (FastAPI's
TestClient on the app, no Ray; fixtures of tests/http/test_ab_rounds.py, whose tiny models render
the prompts, while the answers are scripted: those untrained models answer every prompt alike): each
vote with a winner is one pair on the answers the pair showed, ties and "both bad" give none, the
same prompt with the same two answers counts once, opposite votes on them give none, thumbs up and
down on answers to one prompt give a pair, a correction gives one, a prompt in a delta's test part or
the style probes is left out, and the file ingests as preference records."""

from __future__ import annotations

import json

from evo.ab.export import collect
from evo.atomic import atomic_write_json
from evo.cli import main
from evo.config import EvoConfig
from evo.data.ingest import ingest_jsonl
from evo.data.records import Record
from evo.data.store import DataStore, delta_parts
from evo.healing.corrections import Correction, CorrectionStore
from tests.http import test_ab_rounds as ab
from tests.http.test_ab_rounds import ASK, ask, chat, vote

models, served = ab.models, ab.served  # the fixtures: tiny models, the app on a lineage root


def scripted(state) -> None:
    """Each model answers with its generation and the question, as folded text: two spellings of a
    question get the same answer from one model, and the two models never answer alike."""
    gens = {sha: m["gen_id"] for sha, m in state.gw.models.items()}

    async def answer_batch(request: dict) -> dict:
        asked = request["messages"][-1]["content"] if "messages" in request else request["prompt"]
        said = f"{gens[request['sha']]} says: {' '.join(asked.lower().split())}"
        return {"outputs": [(said, "stop", 3)], "prompt_tokens": 5}

    state.answer_batch = answer_batch


def text(answer: dict) -> str:
    choice = answer["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def label_of(pair: dict, answer: str) -> str:
    return "a" if text(pair["a"]) == answer else "b"


def lineage_data(root, probe: str) -> str:
    """A run config and one delta in the root, as `evo run` leaves them; a prompt of its test part."""
    (root / "probes.jsonl").write_text(json.dumps({"prompt": probe}) + "\n")
    cfg = EvoConfig(data={"base": "b.jsonl"}, eval={"probes": str(root / "probes.jsonl")})
    atomic_write_json(root / "run_config.json", cfg.model_dump(mode="json"))
    records = [Record("completion", f"What does lamp number {i} cost?", f" {i} euros") for i in range(40)]
    DataStore(root).put(records)
    return delta_parts(records, cfg.data.val_fraction, cfg.data.test_fraction).test[0].prompt


def thumbs(http, model: str, content: str, value: str) -> str:
    r = http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}],
                                                "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200, r.text
    assert http.post("/v1/feedback", json={"response_id": r.json()["id"], "value": value}).status_code == 200
    return r.json()["choices"][0]["message"]["content"]


def test_a_rounds_feedback_becomes_preference_pairs_with_what_was_left_out_and_why(served, tmp_path):
    http, root, _, state = served
    scripted(state)
    test_prompt = lineage_data(root, probe="Say hello to the shop.")
    round_id = http.get("/ab/stats").json()["round"]["id"]

    won = ask(http, chat(ASK))
    assert text(won["a"]) != text(won["b"])  # the two tiny models answer this differently
    assert vote(http, won, "a").status_code == 200
    again = ask(http, chat("  what is the price of the ZORA lamp? "))  # one rendered prompt, the same two answers
    assert vote(http, again, label_of(again, text(won["a"]))).status_code == 200  # the same preference: counts once

    split = ask(http, chat("Is the Bove lamp in stock?"))
    assert text(split["a"]) != text(split["b"])
    assert vote(http, split, "a").status_code == 200
    other = ask(http, chat("Is the Bove lamp in stock?"))  # the opposite preference on the same answers
    assert vote(http, other, label_of(other, text(split["b"]))).status_code == 200

    assert vote(http, ask(http, chat("Where is the shop?")), "tie").status_code == 200
    assert vote(http, ask(http, chat("When do you open?")), "both_bad").status_code == 200
    assert vote(http, ask(http, chat(test_prompt)), "a").status_code == 200  # a test part's question
    assert vote(http, ask(http, {"messages": [{"role": "system", "content": "be kind"},
                                              {"role": "user", "content": "Say hello to the shop."}]}), "b").status_code == 200
    unvoted = ask(http, chat("Do you ship abroad?"))  # shown, never voted: nothing

    up = thumbs(http, "champion", "How heavy is the Zora lamp?", "up")
    down = thumbs(http, "candidate", "How heavy is the Zora lamp?", "down")
    thumbs(http, "champion", "Which colours does it come in?", "up")  # one-sided: no pair
    CorrectionStore(root).add([Correction("lamp 7 price =", " 9 euros", " 7 euros", "price"),
                               Correction("lamp 8 price =", "", " 8 euros", "price")])

    assert main(["feedback", "export", round_id, "--root", str(root)]) == 0
    out = root / "feedback" / f"{round_id}.preference.jsonl"
    summary = json.loads((root / "feedback" / f"{round_id}.preference.summary.json").read_text())
    records = ingest_jsonl(out).records  # ingestable as it is, every line a preference pair
    assert [r.kind for r in records] == ["preference"] * 3
    vote_pair, thumb_pair, correction = records
    assert json.loads(vote_pair.messages) == [{"role": "user", "content": ASK}]
    assert (vote_pair.completion, vote_pair.rejected) == (text(won["a"]), text(won["b"]))
    assert json.loads(thumb_pair.messages)[-1]["content"] == "How heavy is the Zora lamp?"
    assert (thumb_pair.completion, thumb_pair.rejected) == (up, down) and up != down
    assert (correction.prompt, correction.completion, correction.rejected) == ("lamp 7 price =", " 7 euros", " 9 euros")
    assert correction.category == "correction:price"

    assert summary["pairs"] == 3 and summary["used"] == {"vote": 1, "thumbs": 1, "correction": 1}
    reasons = summary["skipped"]
    assert reasons.pop(f"duplicate of vote {won['pair_id']}") == 1
    assert reasons.pop("contradicting preferences on the same prompt and answers") == 2
    assert reasons.pop("prompt kept apart (a test part or the style probes)") == 2
    assert reasons.pop("tie") == 1 and reasons.pop("both bad") == 1
    assert reasons.pop("one-sided thumbs (no answer to the same prompt was rated the other way)") == 1
    assert reasons.pop("no wrong answer recorded") == 1
    assert reasons == {}
    assert summary["checked_against"]["deltas"] == 1 and summary["checked_against"]["probes"] == 1
    assert unvoted["pair_id"] not in json.dumps(summary)
    assert {s["ref"] for s in summary["items_skipped"] if s["reason"] == "tie"} <= {
        e["pair_id"] for e in state.gw.feedback.read().events if e["kind"] == "pair"}

    # without the corrections, the round's own pairs only; an unknown round names the known ones
    assert len(collect(root, round_id, corrections=False).pairs) == 2
    assert main(["feedback", "export", "nope", "--root", str(root)]) == 2


def test_a_log_from_before_answers_were_stored_exports_nothing_and_says_why(served):
    """Votes logged before the server kept a pair's answers (an old log) are skipped with the reason,
    never exported as pairs of made-up answers."""
    http, root, (a, b, _), state = served
    round_id = state.gw.current_round().id
    log = state.gw.feedback
    log.append({"kind": "pair", "pair_id": "old-1", "a": "champion", "prompt_key": "k",
                "shas": {"champion": a, "candidate": b}, "round": round_id})
    log.append({"kind": "pairwise", "pair_id": "old-1", "prompt_key": "k", "winner": "candidate", "round": round_id})
    assert main(["feedback", "export", round_id, "--root", str(root), "--no-corrections"]) == 1
    summary = json.loads((root / "feedback" / f"{round_id}.preference.summary.json").read_text())
    assert summary["pairs"] == 0 and summary["file"] is None
    assert summary["skipped"] == {"answers not recorded (shown before the server stored them)": 1}
    assert not (root / "feedback" / f"{round_id}.preference.jsonl").exists()


def test_a_tenants_prompts_stay_out_of_the_shared_lines_pairs_unless_an_admin_names_the_tenant(served):
    """A tenant key's side-by-side votes and thumbs are logged with the key that asked; the export
    leaves them out (a tenant's data stays on its branch) and says why, while an admin key's vote
    counts; `--tenant KEY_ID` is the admin's decision to use that tenant's prompts, on record in the
    summary."""
    http, root, _, state = served
    scripted(state)
    round_id = http.get("/ab/stats").json()["round"]["id"]
    tenant, row = state.auth.store.create("fine-tune", "acme")
    lead, _ = state.auth.store.create("admin", "lead")
    as_tenant, as_lead = {"Authorization": f"Bearer {tenant}"}, {"Authorization": f"Bearer {lead}"}
    for who, content in ((as_tenant, "What is acme's secret launch date?"), (as_lead, ASK)):
        pair = http.post("/v1/side_by_side", json={"max_tokens": 2, "temperature": 0, **chat(content)}, headers=who)
        assert pair.status_code == 200, pair.text
        voted = http.post("/v1/feedback/pairwise", json={"pair_id": pair.json()["pair_id"], "preferred": "a"},
                          headers=who)
        assert voted.status_code == 200, voted.text
    for model, value in (("champion", "up"), ("candidate", "down")):
        r = http.post("/v1/chat/completions", headers=as_tenant, json={
            "model": model, "messages": [{"role": "user", "content": "acme's pricing plan?"}], "max_tokens": 3})
        assert r.status_code == 200, r.text
        assert http.post("/v1/feedback", json={"response_id": r.json()["id"], "value": value},
                         headers=as_tenant).status_code == 200

    shared = collect(root, round_id, corrections=False)
    assert [json.loads(json.dumps(p.prompt))[-1]["content"] for p in shared.pairs] == [ASK]
    why = f"asked by tenant key {row['id']}: its data stays on its branch (an admin may name it with --tenant)"
    assert sum(s["reason"] == why for s in shared.skipped) == 3  # the vote and both thumbs
    assert "acme" not in json.dumps([p.line() for p in shared.pairs])
    assert shared.checked["tenants_included"] == []

    assert main(["feedback", "export", round_id, "--root", str(root), "--no-corrections", "--tenant", row["id"]]) == 0
    summary = json.loads((root / "feedback" / f"{round_id}.preference.summary.json").read_text())
    assert summary["used"] == {"vote": 2, "thumbs": 1, "correction": 0}
    assert summary["checked_against"]["tenants_included"] == [row["id"]]


def test_prompts_logged_before_the_asker_was_recorded_are_left_out_on_a_root_with_keys(served):
    """An old log's events carry no `asker`: on a root that has API keys they may be any tenant's, so
    the export leaves them out (fail closed) unless the admin includes them (`--tenant unrecorded`);
    on a root that never had a key (one tenant) they are the shared line's."""
    http, root, (a, b, _), state = served
    round_id = state.gw.current_round().id
    log = state.gw.feedback
    log.append({"kind": "pair", "pair_id": "old-1", "a": "champion", "prompt_key": "k",
                "shas": {"champion": a, "candidate": b}, "round": round_id})
    log.append({"kind": "answers", "pair_id": "old-1", "input": {"messages": [{"role": "user", "content": "old q?"}]},
                "a": "old answer a", "b": "old answer b", "round": round_id})
    log.append({"kind": "pairwise", "pair_id": "old-1", "prompt_key": "k", "winner": "candidate", "round": round_id})
    assert len(collect(root, round_id, corrections=False).pairs) == 1  # never keyed: one tenant's log
    state.auth.store.create("fine-tune", "acme")
    kept = collect(root, round_id, corrections=False)
    assert kept.pairs == [] and "before the server recorded who asked" in kept.skipped[0]["reason"]
    assert len(collect(root, round_id, corrections=False, tenants=("unrecorded",)).pairs) == 1


def test_serve_exports_each_rounds_feedback_on_a_schedule_and_only_what_changed(served):
    """`evo serve --export-feedback-every MIN` (issue 29): each round of the log is exported as
    `evo feedback export ROUND --no-corrections` exports it, to its default path; a pass rewrites only
    the rounds whose export changed; a new vote shows up in the next pass; a URI root is refused."""
    import threading
    import time

    from evo.ab.export import export_rounds, follow_feedback

    http, root, _, state = served
    scripted(state)
    lineage_data(root, probe="Say hello to the shop.")
    assert export_rounds(root) == []  # no log yet
    round_id = state.gw.current_round().id
    path = root / "feedback" / f"{round_id}.preference.jsonl"
    won = ask(http, chat(ASK))
    assert vote(http, won, "a").status_code == 200
    tie = ask(http, chat("Is the Bove lamp in stock?"))
    assert http.post("/v1/feedback/pairwise", json={"pair_id": tie["pair_id"], "preferred": "tie"}).status_code == 200
    first = {r: n for r, _, n in export_rounds(root)}
    n = len(collect(root, round_id, corrections=False).pairs)
    assert first == {round_id: n} and n == 1 and len(path.read_text().splitlines()) == n  # the tie gives none
    assert export_rounds(root) == []  # nothing changed since: nothing rewritten
    pair = ask(http, chat("Which lamp is the brightest one here?"))
    assert text(pair["a"]) != text(pair["b"])
    assert vote(http, pair, "b").status_code == 200
    stop, said = threading.Event(), []
    thread = threading.Thread(target=follow_feedback, args=(root, 0.05, stop, said.append), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not said and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert said == [f"feedback export: round {round_id}: {n + 1} preference pairs in {path}"], said
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == n + 1 and f"vote:{pair['pair_id']}" in {x["id"] for x in lines}
    assert not any(x["id"].startswith("correction:") for x in lines)  # corrections train as corrections
    assert main(["serve", "--root", "s3://bucket/lineage", "--export-feedback-every", "5"]) == 2
