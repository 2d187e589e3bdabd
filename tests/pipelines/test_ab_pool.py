"""The A/B round's own prompts and its reruns, without a server: the judge's pool keeps apart from
the lineage (no near-copy of a delta, a correction or a scored prompt: the healing paraphrases among
them), an answer may run to its reference's length, and a rerun says whose votes it continues."""

from __future__ import annotations

import json
import re

from evo.ab.feedback import FeedbackStore, Round
from evo.ab_round import Judged, budgets, earlier_votes, judge_items
from evo.config import load_config
from evo.data.ingest import ingest_jsonl
from evo.data.shop import PER_GENERATION, TEMPLATES, write_shop_data
from evo.data.store import DataStore
from evo.model.tokenizer import train_bpe_tokenizer
from evo.nearcopy import NearIndex, questions


def test_the_judges_pool_has_no_near_copy_of_the_lineage_nor_a_healing_paraphrase(tmp_path):
    """The shop domain's 64 held-out phrasings were the whole pool, both healing paraphrases (the
    planted prices' held-out phrasing, which the gate scores) among them."""
    folder = tmp_path / "shop"
    cfg = load_config(write_shop_data(folder, generations=2))
    root = tmp_path / "lineage"
    records = [r for g in (1, 2) for r in ingest_jsonl(folder / f"gen{g}.jsonl").records]
    DataStore(root).put(records)
    items, source = judge_items(cfg, root, [], 300, 0)
    asked = [i.prompt["prompt"] for i in items]
    paraphrases = [json.loads(line)["prompt"] for line in (folder / "paraphrases.jsonl").read_text().splitlines()]
    assert len(paraphrases) == 2 and not set(paraphrases) & set(asked)
    data = NearIndex(q for r in records for q in questions(r))
    assert not [p for p in asked if p in data]
    left_out = int(re.search(r"\((\d+) such left out\)", source).group(1))
    held_out_phrasings = 2 * PER_GENERATION * len(TEMPLATES)  # the last phrasing of each attribute, in no delta
    assert left_out >= len(paraphrases) and len(asked) == len(set(asked)) == held_out_phrasings - left_out
    assert all(i.reference for i in items)  # each has its label: its answer may run to that length


def test_the_demo_domains_pool_keeps_apart_by_its_own_question_identity(tmp_path):
    """In the demo's phrases one changed word is another question ("tr big owl hides =" and "tr big owl
    digs =" answer differently), so the word measure, which forgives one word, left the demo's judge no
    prompt at all (2026-12-02: 154 left out of 154). The demo's generator names a phrase's question
    (`DemoGenerator.question`): the pool keeps every phrase of no delta, and no phrase of one in any
    word order or spacing."""
    from evo.data.demo import DemoGenerator, write_demo_data

    folder = tmp_path / "demo"
    cfg = load_config(write_demo_data(folder, generations=3))
    root = tmp_path / "lineage"
    records = [r for g in (1, 2, 3) for r in ingest_jsonl(folder / f"gen{g}.jsonl").records]
    DataStore(root).put(records)
    items, source = judge_items(cfg, root, [], 64, 0)
    gen = DemoGenerator(0)
    trained = {gen.question(q) for r in records for q in questions(r)} - {None}
    asked = [gen.question(i.prompt["prompt"]) for i in items]
    assert len(items) == 64 and None not in asked and not set(asked) & trained, source
    words = NearIndex(q for r in records for q in questions(r))
    assert sum(i.prompt["prompt"] in words for i in items) > 32  # what the word measure would have dropped
    from evo.ab_round import SameQuestion

    apart = SameQuestion(gen.question, ["TR big owl hides =", "Translate: tr big owl digs ="])
    assert "tr big owl hides =" in apart  # the same phrase in capitals
    assert "tr big owl digs =" in apart  # a near-copy of a text the domain cannot read, by the word measure


def test_the_demo_judge_asks_gen1s_words_in_phrases_no_file_holds(tmp_path):
    """On 2026-12-02 the demo's round on gen-1 was undecided at 100 ties in 100: gen-1's file held every
    phrase of its new nouns, so each prompt the judge could ask had a word neither arm was taught. One
    new phrase in six of each generation is now written to no file (`reserved_combos`), and the judge
    asks phrases of the candidate line's words (`DemoGenerator.ask`): for gen-1, exactly those."""
    from evo.data.demo import RESERVED, DemoGenerator, _new_combos, reserved_combos, write_demo_data

    folder = tmp_path / "demo"
    cfg = load_config(write_demo_data(folder, generations=3))
    files = {g: ingest_jsonl(folder / (f"gen{g}.jsonl" if g else "base.jsonl")).records for g in range(4)}
    root = tmp_path / "lineage"
    DataStore(root).put([r for rs in files.values() for r in rs])
    gen = DemoGenerator(0)
    written = {gen.question(q) for rs in files.values() for r in rs for q in questions(r)} - {None}
    kept_out = reserved_combos(1, 0)
    assert len(kept_out) == len(_new_combos(1)) // RESERVED == 40 and not kept_out & written
    items, source = judge_items(cfg, root, [], 100, 0, taught=files[0] + files[1])
    asked = [gen.question(i.prompt["prompt"]) for i in items]
    assert set(asked) == kept_out and len(asked) == len(kept_out), source
    assert "asked of the candidate line's words" in source
    assert all(i.judge(i.reference) == 1.0 and i.judge(" " + i.reference.split()[0]) == 0.0 for i in items)
    # a round on gen-1 decided on those 40: no later round asks them again (nor a later session of it)
    first, chat = items[0].prompt["prompt"], items[1].prompt["prompt"]
    store = FeedbackStore(root, "round-gen-1")
    store.append({"kind": "answers", "pair_id": "p0", "input": {"prompt": first}, "a": "x", "b": "y", "round": "r"})
    store.append({"kind": "answers", "pair_id": "p1", "input": {"messages": [{"role": "user", "content": chat}]},
                  "a": "x", "b": "y", "round": "r"})
    again = [i.prompt["prompt"] for i in judge_items(cfg, root, [], 100, 1, taught=files[0] + files[1])[0]]
    assert len(again) == 38 and first not in again and chat not in again
    later = {gen.question(i.prompt["prompt"]) for i in
             judge_items(cfg, root, [], 400, 0, taught=[r for g in range(3) for r in files[g]])[0]}
    # gen-2's words: its kept-out phrases and those its file did not draw, less the healing paraphrases
    # (the gate scores them)
    scored = {gen.question(json.loads(line)["prompt"]) for line in (folder / "paraphrases.jsonl").read_text().splitlines()}
    assert later == (kept_out | set(_new_combos(2))) - written - scored - {gen.question(first), gen.question(chat)}
    assert len(later) > 200


def test_an_answer_may_run_to_its_references_length():
    tok = train_bpe_tokenizer(["the lamp costs 45 florins and comes with a warranty of three years"] * 20, 300)
    long = "The Ostira lamp costs 45 florins and comes with a warranty of three years, from Varnholt."
    items = [Judged({"prompt": "How much is the lamp?"}, lambda a: 0.0, long), Judged({"prompt": "Hi"}, lambda a: 0.0)]
    budgets(items, tok, 4)
    assert items[0].max_tokens >= len(tok(long, add_special_tokens=False)["input_ids"]) + 1 > 4
    assert items[1].max_tokens == 4  # no reference (a style probe): the floor


def test_a_rerun_says_it_continues_the_rounds_votes(tmp_path):
    """A round is one pair of shas: `evo ab` on the same generation again is the same round, and says so."""
    parent, child = "a" * 64, "b" * 64
    assert earlier_votes(tmp_path, "round-gen-1", parent, child) == ""  # a new round
    store, rid = FeedbackStore(tmp_path, "round-gen-1"), Round(parent, child).id
    for i, winner in enumerate(["candidate", "candidate", "champion", "tie"]):
        store.append({"kind": "pairwise", "pair_id": f"p{i}", "prompt_key": f"k{i}", "winner": winner, "round": rid})
    note = earlier_votes(tmp_path, "round-gen-1", parent, child)
    assert f"continuing A/B round {rid}" in note and "its 4 earlier votes on 4 distinct prompts count" in note
    assert "(candidate 2, champion 1, ties 1)" in note
    assert earlier_votes(tmp_path, "round-gen-1", parent, "c" * 64) == ""  # another candidate: a round of its own


def test_the_candidates_line_is_its_own_deltas_and_its_ancestors_only(tmp_path):
    """What the judge's `ask` is given (`line_records`): the records of the candidate's delta and of
    each ancestor's, never a sibling's (a rejected child of the same parent) nor a descendant's; a
    model of the line with no ledger row (a fine-tuning job's) adds nothing and breaks nothing."""
    from evo.ab_round import line_records
    from evo.data.records import Record
    from evo.lineage.root import Lineage

    def delta(word: str) -> tuple[str, list]:
        rs = [Record("completion", f"tr {word} {i} =", f" {i}", "", "translate") for i in range(3)]
        return DataStore(tmp_path).put(rs), rs

    lin = Lineage(tmp_path)
    (d0, r0), (d1, r1), (d2, r2), (d3, r3) = (delta(w) for w in ("base", "one", "sibling", "after"))
    models = {g: f"{i + 1:x}" * 64 for i, g in enumerate(("gen-0", "gen-1", "gen-2", "job", "gen-3"))}
    for gid, parent, data in (("gen-0", "", d0), ("gen-1", "gen-0", d1), ("gen-2", "gen-0", d2)):
        lin.registry.add(models[gid], gid, models.get(parent, ""), "candidate")
        lin.decisions.record({"GEN_ID": gid, "parent_sha": models.get(parent, ""), "child_sha": models[gid],
                              "data_delta_sha": data, "decision": "promoted" if gid != "gen-2" else "rejected",
                              "reason": "test"}, models[gid], "base" if gid == "gen-0" else
                             ("promoted" if gid == "gen-1" else "rejected"))
    lin.registry.add(models["job"], "ftjob-abc", models["gen-1"], "candidate")  # no ledger row
    lin.registry.add(models["gen-3"], "gen-3", models["job"], "candidate")
    lin.decisions.record({"GEN_ID": "gen-3", "parent_sha": models["job"], "child_sha": models["gen-3"],
                          "data_delta_sha": d3, "decision": "rejected", "reason": "test"}, models["gen-3"], "rejected")
    prompts = lambda rs: sorted(r.prompt for r in rs)  # noqa: E731
    assert prompts(line_records(tmp_path, models["gen-1"])) == prompts(r0 + r1)
    assert prompts(line_records(tmp_path, models["gen-3"])) == prompts(r0 + r1 + r3)
    assert prompts(line_records(tmp_path, models["gen-0"])) == prompts(r0)
