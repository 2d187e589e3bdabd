"""Recall's fixed budget: a stratified sample over the line's test parts, the same items for both models."""

import pytest

from evo.config import EvoConfig
from evo.data.records import parse_record
from evo.evals.lineage_evals import eval_spec, recall_budget, recall_sample


def config(**evals) -> EvoConfig:
    return EvoConfig.model_validate({"data": {"base": "base.jsonl"}, "eval": evals})


def parts(sizes: dict[str, int]) -> dict:
    return {g: [parse_record({"prompt": f"{g} q{i} =", "completion": f" a{i}"}) for i in range(n)]
            for g, n in sizes.items()}


def test_the_budget_is_the_n_of_the_interval_the_config_states():
    cfg = config()
    assert cfg.eval.recall_halfwidth == 0.05 and recall_budget(cfg) == 385
    assert recall_budget(config(recall_halfwidth=0.1)) == 97
    assert recall_budget(config(recall_halfwidth=None)) is None


def test_a_deep_line_is_asked_a_fixed_stratified_sample():
    line = parts({f"gen-{g}": 20 for g in range(30)})  # 600 items
    got = recall_sample(line, 385)
    sizes = [len(v) for v in got.values()]
    assert sum(sizes) == 385 and set(got) == set(line)
    assert min(sizes) >= 12 and max(sizes) <= 13  # 385 / 30 = 12.8 each, in proportion
    for g, recs in got.items():
        prompts = [r.prompt for r in recs]
        assert len(set(prompts)) == len(prompts) and set(prompts) <= {r.prompt for r in line[g]}
    assert recall_sample(line, 385) == got  # the child, its parent, a rescoring: the same items


def test_shares_are_the_parts_sizes_and_nothing_more():
    """Each part's share of 100 is its share of the 1000 items (90, 9, 0.9, 0.1), largest remainders
    rounded up: no minimum per part, which would over-ask the small ones and bias the pooled recall."""
    got = recall_sample(parts({"gen-0": 900, "gen-1": 90, "gen-2": 9, "gen-3": 1}), 100)
    assert {g: len(v) for g, v in got.items()} == {"gen-0": 90, "gen-1": 9, "gen-2": 1, "gen-3": 0}


def test_the_pooled_recall_of_the_sample_estimates_the_lines():
    """3000 items right 40% of the time and 60 parts of 5 right 90%: the line's recall is 0.445; the
    sample's pooled rate (what the gate reads) expects it within a point (each part's rate times its
    share), not the 0.51 a minimum of one item per part would give."""
    line = {"gen-0": [parse_record({"prompt": f"q{i} =", "completion": " r" if i % 5 < 2 else " w"})
                      for i in range(3000)]}
    line |= {f"gen-{g}": [parse_record({"prompt": f"p{g} {i} =", "completion": " r" if i < 4 or g % 2 else " w"})
                          for i in range(5)] for g in range(1, 61)}
    rate = lambda recs: sum(r.completion == " r" for r in recs) / len(recs)  # noqa: E731
    whole = rate([r for recs in line.values() for r in recs])
    got = recall_sample(line, 385)
    expected = sum(len(got[g]) * rate(line[g]) for g in line) / 385
    assert abs(whole - 0.445) < 0.001 and abs(expected - whole) < 0.01 and sum(map(len, got.values())) == 385


def test_a_line_within_the_budget_is_asked_whole():
    line = parts({"gen-0": 30, "gen-1": 40})
    assert recall_sample(line, 385) == line and recall_sample(line, None) == line
    assert {g: len(v) for g, v in recall_sample(line, None, cap=25).items()} == {"gen-0": 25, "gen-1": 25}


def test_the_eval_spec_asks_the_sample_and_knows_what_it_was_drawn_from():
    cfg = config(recall_halfwidth=0.1, max_items=500)
    line = parts({f"gen-{g}": 50 for g in range(10)})
    spec = eval_spec(cfg, line, [], [])
    assert sum(len(v) for v in spec.qa_sets.values()) == 97 and spec.qa_available == 500
    whole = eval_spec(config(recall_halfwidth=None, max_items=500), line, [], [])
    assert sum(len(v) for v in whole.qa_sets.values()) == 500
    capped = eval_spec(config(recall_halfwidth=None, max_items=30), line, [], [])  # each part read to 30
    assert sum(len(v) for v in capped.qa_sets.values()) == capped.qa_available == 300


@pytest.mark.parametrize("bad", [0, 0.5, -0.1])
def test_a_halfwidth_outside_0_to_half_is_refused(bad):
    with pytest.raises(ValueError, match="recall_halfwidth"):
        config(recall_halfwidth=bad)
