"""Targeted data: the demo's generator, the filter (dedupe, quality, diversity, share) and loading."""

from __future__ import annotations

import json
import random

import pytest

from evo.answers import normalize
from evo.curation.targeted import (
    NEAR_EVAL,
    Candidate,
    Filter,
    TargetedError,
    jaccard,
    load_generator,
    record_json,
    select,
    trigrams,
)
from evo.data.demo import ADJECTIVES, NOUNS, VERBS, DemoGenerator, _lexicon, translate
from evo.data.records import Record, parse_record
from evo.experiment import Arm, Replication, Round, Score, interval, random_records, summarize, t975
from evo.nearcopy import NearIndex


def rec(prompt: str, completion: str = " x", kind: str = "completion") -> Record:
    return Record(kind, prompt, completion, "", "translate")


def cand(prompt: str, score: float, quality: float = 1.0, completion: str = " x") -> Candidate:
    c = Candidate(rec(prompt, completion), "generator", "seed", "area", "generator", quality=quality)
    c.score = score
    return c


F = Filter(keep_share=1.0, max_records=100, min_quality=0.5, near_duplicate=0.9, max_chars=200,
           banned_phrases=["as an ai"])


def test_demo_generator_labels_varies_and_samples_within_the_domain():
    g = DemoGenerator(seed=0)
    lex = _lexicon(0)
    assert g.label("tr sad yak digs =") == translate(lex, "sad", "yak", "digs")
    for bad in ("tr sad yak flies =", "tr sad yak digs", "hello", "tr sad yak digs = now"):
        assert g.label(bad) is None, bad
    seed = rec("tr red fox runs =", translate(lex, "red", "fox", "runs"))
    vs = g.variations(seed, 8, random.Random(1))
    assert len(vs) == 8 and len({v.prompt for v in vs}) == 8
    for v in vs:
        words = v.prompt.split()[1:4]
        assert sum(a == b for a, b in zip(words, ["red", "fox", "runs"])) == 2  # one word changed
        assert v.completion == g.label(v.prompt)
    assert g.variations(rec("not a phrase"), 4, random.Random(0)) == []
    drawn = g.sample(50, random.Random(2))
    assert len({d.prompt for d in drawn}) == 50
    vocab = set(sum(ADJECTIVES + NOUNS + VERBS, []))
    assert all(set(d.prompt.split()[1:4]) <= vocab for d in drawn)


def test_filter_drops_duplicates_invalid_and_low_quality_and_says_why():
    cands = [cand("tr red fox runs =", 0.9), cand("tr red fox runs =", 0.8),  # the same prompt twice
             cand("tr old cat eats =", 0.7),  # already in the lineage's data
             cand("tr big dog sees =", 0.6, completion=" as an AI, no"),  # banned phrase
             cand("tr hot eel hides =", 0.5, quality=0.2),  # below min quality
             cand("tr shy ant digs =", 0.4, completion=" ")]  # empty
    kept = select(cands, {"tr old cat eats ="}, F)
    assert [c.record.prompt for c in kept] == ["tr red fox runs ="]
    why = [c.dropped for c in cands]
    assert why[1] == "duplicate" and why[2] == "duplicate"
    assert "banned phrase" in why[3] and why[4].startswith("quality 0.20") and why[5] == "empty completion"


def test_filter_prefers_diverse_picks_and_keeps_the_share():
    near = [cand(f"tr red fox runs fast {i} =", 1.0 - i * 0.01) for i in range(4)]  # near-identical, high score
    far = [cand("tr calm gnu swims =", 0.6), cand("tr dark jay sings =", 0.55)]
    f = Filter(keep_share=0.5, max_records=100, min_quality=0.0, near_duplicate=0.95, max_chars=200)
    kept = select(near + far, set(), f)
    assert len(kept) == 3  # half of 6
    assert kept[0] is near[0]
    assert {c.record.prompt for c in kept[1:]} == {"tr calm gnu swims =", "tr dark jay sings ="}  # diversity wins
    assert all(0 < c.diversity <= 1 for c in kept)
    assert all(c.dropped == "below the kept share" for c in near[1:])


def test_near_duplicates_of_a_pick_are_dropped():
    a, b = cand("tr red fox runs quickly =", 1.0), cand("tr red fox runs quickly =!", 0.9)
    assert 0.8 <= jaccard(trigrams(a.record.prompt), trigrams(b.record.prompt)) < 1  # not an exact duplicate
    kept = select([a, b], set(), Filter(1.0, 10, 0.0, 0.8, 200))
    assert kept == [a] and b.dropped == "near-duplicate of a kept one"


def test_max_records_caps_what_is_kept():
    cands = [cand(f"tr {a} {n} runs =", 1.0) for a in ADJECTIVES[0] for n in NOUNS[0]]
    assert len(select(cands, set(), Filter(1.0, 7, 0.0, 1.0, 200))) == 7


def test_records_are_written_in_a_form_ingest_reads_back():
    chat = parse_record({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                         "category": "chat"})
    for r in (rec("tr red fox runs =", " ab cd"), chat, parse_record({"text": "free text"})):
        back = parse_record(json.loads(json.dumps(record_json(r))))
        assert back.sha == r.sha and back.category == r.category


def test_generator_spec_errors_name_the_problem():
    assert load_generator(None, {}) is None
    with pytest.raises(TargetedError, match="cannot import"):
        load_generator("no_such_module_xyz:Gen", {})
    with pytest.raises(TargetedError, match="do not fit"):
        load_generator("evo.data.demo:DemoGenerator", {"colour": "red"})
    with pytest.raises(TargetedError, match="has no variations"):
        load_generator("json:JSONDecoder", {})


def test_random_arm_draws_unseen_records_only():
    g = DemoGenerator(0)
    known = {r.prompt for r in g.sample(1000, random.Random(0))}
    got, near = random_records(g, [], 50, known, random.Random(1))
    assert len(got) == 50 and not {r.prompt for r in got} & known and near == 0
    pool = [rec(f"p{i}") for i in range(10)]
    got, _ = random_records(None, pool, 20, {"p3"}, random.Random(0))
    assert {r.prompt for r in got} == {f"p{i}" for i in range(10)} - {"p3"}


def test_near_copies_of_the_evaluation_set():
    near = NearIndex(["tr red fox runs =", "tr big owl eats ="])
    assert "tr red fox runs =" in near  # itself
    assert "tr red fox eats =" in near and "tr sad fox runs =" in near  # one word changed
    assert "tr red fox runs fast =" in near and "tr fox red runs =" in near  # one word added; the order
    assert "tr sad fox eats =" not in near and "tr big fox sees =" not in near  # two words away from both
    assert "tr red owl sees =" not in near  # shares words with both, two changed from each
    assert len(near) == 2


def test_both_arms_lose_what_is_a_near_copy_of_an_evaluation_prompt():
    g = DemoGenerator(0)
    evals = g.sample(60, random.Random(3))
    near = NearIndex(normalize(r.prompt) for r in evals)
    got, refused = random_records(g, [], 100, {r.prompt for r in evals}, random.Random(4), near)
    assert len(got) == 100 and refused > 100  # in this domain most phrases are near one of 60
    assert not any(r.prompt in near for r in got)
    cands = [Candidate(r, "generator", "", "a", "generator", score=1.0) for r in g.variations(evals[0], 20, random.Random(0))]
    kept = select(cands, set(), Filter(1.0, 100, 0.0, 1.01, 1000, too_close=near.__contains__))
    assert kept == [] and {c.dropped for c in cands} == {NEAR_EVAL}  # variations of an eval item are all near it


def _arm(acc: float, area_acc: float, loss: float = 1.0, n: int = 10) -> Arm:
    scores = {"areas": Score(n, loss, area_acc), "overall": Score(40, loss, acc)}
    return Arm("p", "c", n, 0, 0, 0.0, 0.0, "", [], scores, scores)


def test_the_lead_over_seeds_is_a_mean_with_a_t_interval():
    assert t975(1) == 12.706 and t975(30) == 2.042 and abs(t975(60) - 2.000) < 0.002 and abs(t975(10_000) - 1.96) < 0.001
    one = interval([0.1])
    assert one.mean == 0.1 and one.low is None and one.high is None
    i = interval([0.1, 0.2, 0.3])
    assert i.mean == pytest.approx(0.2) and i.low == pytest.approx(0.2 - 4.303 * 0.1 / 3 ** 0.5)
    assert i.high == pytest.approx(0.2 + 4.303 * 0.1 / 3 ** 0.5)

    def rep(seed, leads):
        start = {"areas": Score(10, 2.0, 0.0), "overall": Score(40, 2.0, 0.0)}
        rounds = [Round(k + 1, ["a"], {}, _arm(0.5, 0.5 + d, loss=1.0 - d), _arm(0.5, 0.5)) for k, d in enumerate(leads)]
        return Replication(seed, "", "", 40, 200, "", ["a"], 10, start, rounds)

    summary = summarize([rep(0, [0.1, 0.2]), rep(1, [0.3]), rep(2, [0.2, 0.0])])
    assert [(r.round, r.seeds) for r in summary] == [(1, 3), (2, 2)]  # a seed that stopped early counts where it got
    first = summary[0].lead
    assert first["areas"]["accuracy"].mean == pytest.approx(0.2) and first["areas"]["accuracy"].n == 3
    assert first["areas"]["loss"].mean == pytest.approx(0.2)  # loss down by the same
    assert first["overall"]["accuracy"].mean == 0.0 and first["overall"]["accuracy"].high == 0.0  # no spread, no width
    assert summary[1].lead["areas"]["accuracy"].values == pytest.approx([0.2, 0.0])


def test_no_weak_area_says_which_knobs_to_turn():
    from evo.config import TargetedConfig
    from evo.curation.targeted import make_targeted
    from evo.curation.weak import WeakReport

    weak = WeakReport(examples=8, threshold=4.0, area_grouping="category", weak_share=0.5,
                      above_threshold=[(2.0, 7), (4.0, 1)], weak_areas=[], worst=[])
    with pytest.raises(TargetedError, match=r"no area has at least 50% .* >2: 7, >4: 1.*healing.weak_share"):
        make_targeted(None, None, [], weak, None, TargetedConfig(), F, set(), 48, 8)


def test_targeted_data_keeps_apart_from_every_scored_prompt(tmp_path):
    """`evo targeted` (no caller's set given): a candidate that is a near-copy of a prompt some score is
    measured on (a test part's question, a healing paraphrase, eval.general's) is dropped; before, only
    the same string was."""
    from evo.config import load_config
    from evo.curation.targeted import scored_prompts
    from evo.data.ingest import ingest_jsonl
    from evo.data.shop import write_shop_data
    from evo.data.store import DataStore, delta_parts
    from evo.lineage.ledger import Ledger
    from evo.lineage.root import Lineage

    cfg = load_config(write_shop_data(tmp_path / "shop", generations=1))
    delta = ingest_jsonl(tmp_path / "shop" / "gen1.jsonl").records
    root = tmp_path / "lineage"
    Ledger(root).append({"GEN_ID": "gen-1", "data_delta_sha": DataStore(root).put(delta), "decision": "promoted",
                         "split": "v3"})
    scored = scored_prompts(Lineage(root), cfg)
    test = [r for r in delta_parts(delta, cfg.data.val_fraction, cfg.data.test_fraction).test if r.kind == "completion"]
    paraphrase = json.loads((tmp_path / "shop" / "paraphrases.jsonl").read_text().splitlines()[0])["prompt"]
    assert test and {r.prompt for r in test} <= set(scored) and paraphrase in scored
    assert "What is 5 plus 3?" in scored  # eval.general's
    asked = test[0].prompt
    cands = [cand(asked.replace("?", " exactly?"), 1.0), cand(paraphrase.replace(".", " today."), 0.9),
             cand("what is five plus three", 0.8), cand("How much does a Qorvane catalogue cost?", 0.7)]
    kept = select(cands, set(), Filter(1.0, 100, 0.0, 1.01, 1000, too_close=NearIndex(scored).__contains__))
    assert [c.record.prompt for c in kept] == ["How much does a Qorvane catalogue cost?"]
    assert [c.dropped for c in cands[:3]] == [NEAR_EVAL] * 3
