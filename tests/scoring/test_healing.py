"""Self-healing checks: rule validators, the items asked again, healed and recurred patterns, and
the gate's no-recurrence rule."""

from __future__ import annotations

import json

import pytest

from evo.config import ConfigError, GateConfig, load_config
from evo.gate import GenerationScores, gate
from evo.healing.corrections import parse_correction
from evo.healing.validators import (
    HealItem,
    PatternRule,
    healed_and_recurred,
    healing_items,
    read_paraphrases,
    register_check,
    score_healing,
    violation,
)

ITEM = HealItem("p1", "tr red fox runs =", expected=" ka mo pe", wrong=" ka mo ti")


@pytest.mark.parametrize("output,rule,why", [
    (" ka mo pe", None, None),
    ("  ka  mo pe ", None, None),  # whitespace normalized like the accuracy evals
    (" ka mo ti", None, "differs from the corrected output"),
    (" ka mo pe", PatternRule(forbid=(r"\bpe\b",)), "matches forbidden /\\bpe\\b/"),
    (" ka mo xx", PatternRule(require=(r"mo",)), "differs from the corrected output"),
    (" zz", PatternRule(require=(r"mo",)), "misses required /mo/"),
])
def test_violation_table(output, rule, why):
    assert violation(ITEM, output, rule) == why


def test_a_parents_errors_are_told_apart():
    """The corrected error itself, or another wrong answer (a word it never learned)."""
    item = HealItem("p1", "tr red fox jumps =", expected=" ka mo pe", wrong=" ka mo ti", source="paraphrase")
    res = score_healing([item, item, item], [" ka mo ti", " zz mo pe", " ka mo pe"], {})["p1"]
    assert (res.violations, res.repeats_error, res.other_wrong, res.total) == (2, 1, 1, 3)


def test_without_a_known_answer_only_the_wrong_output_counts():
    item = HealItem("p1", "tr red fox swims =", wrong=" ka mo ti", source="paraphrase")
    assert violation(item, " ka mo ti") == "repeats the wrong output"
    assert violation(item, " something else") is None


def test_registered_checks_are_used_by_name():
    @register_check("no-shouting")
    def shouting(prompt: str, output: str) -> bool:
        return output.isupper()

    assert violation(HealItem("p", "x"), "LOUD", PatternRule(check="no-shouting")) == "fails check no-shouting"
    assert violation(HealItem("p", "x"), "quiet", PatternRule(check="no-shouting")) is None
    with pytest.raises(KeyError, match="no check named 'missing'"):
        violation(HealItem("p", "x"), "y", PatternRule(check="missing"))


def test_items_cover_corrections_then_paraphrases_of_corrected_patterns(tmp_path):
    c = [parse_correction({"prompt": f"q{i}", "wrong": "w", "corrected": "c", "pattern": "p1"}) for i in range(3)]
    para = tmp_path / "para.jsonl"
    para.write_text('{"pattern": "p1", "prompt": "other", "expected": "c"}\n{"pattern": "p9", "prompt": "x"}\n')
    items, excluded = healing_items(c, read_paraphrases(para), per_pattern=10)
    assert [i.prompt for i in items] == ["q0", "q1", "q2", "other"] and not excluded  # p9: no correction, not asked
    assert len(healing_items(c, read_paraphrases(para), per_pattern=2)[0]) == 2
    # prompts the lineage trained on (the corrections join every mix) are left out, and said so
    items, excluded = healing_items(c, read_paraphrases(para), per_pattern=10, trained=frozenset({"q0", "q1", "q2"}))
    assert [i.prompt for i in items] == ["other"] and [i.prompt for i in excluded] == ["q0", "q1", "q2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "no pattern"}\n')
    with pytest.raises(ValueError, match=f"{bad}:1: a paraphrase needs 'pattern'"):
        read_paraphrases(bad)


def test_a_paraphrase_trained_in_another_spelling_or_in_a_chat_turn_is_not_asked(tmp_path):
    """What a lineage trained on is read by the split's question key, every user turn (`seen_prompts`):
    a paraphrase trained in lower case without its full stop, or asked in a chat's earlier turn, is the
    same question; answered right, it would show memory, not healing. A fresh one is still asked."""
    from evo.data.records import Record
    from evo.data.store import write_records
    from evo.evals.lineage_evals import seen_prompts
    from evo.lineage.root import Lineage

    chat = [{"role": "user", "content": "Tell me what the Wynvek lamp costs."},
            {"role": "assistant", "content": "34 florins."},
            {"role": "user", "content": "Is it heavy?"}, {"role": "assistant", "content": "No."}]
    (tmp_path / "runs" / "gen-1").mkdir(parents=True)
    write_records(tmp_path / "runs" / "gen-1" / "mix.parquet",
                  [Record("completion", "tell me what the Ostira saw costs", " 41 florins."),
                   Record("chat", "", "No.", json.dumps(chat))])
    c = [parse_correction({"prompt": f"How much does the {p} cost?", "wrong": " 9 florins.", "corrected": " 41 florins.",
                           "pattern": "price"}) for p in ("Ostira saw", "Wynvek lamp")]
    para = tmp_path / "para.jsonl"
    para.write_text("".join(json.dumps({"pattern": "price", "prompt": f"Tell me what the {p} costs."}) + "\n"
                            for p in ("Ostira saw", "Wynvek lamp", "Rikald kettle")))
    items, excluded = healing_items(c, read_paraphrases(para), 10, seen_prompts(Lineage(tmp_path)))
    assert [i.prompt for i in excluded] == ["Tell me what the Ostira saw costs.", "Tell me what the Wynvek lamp costs."]
    assert [i.prompt for i in items][-1] == "Tell me what the Rikald kettle costs."


def test_healed_and_recurred():
    items = [HealItem("a", "1", "x"), HealItem("a", "2", "x"), HealItem("b", "3", "y")]
    scored = score_healing(items, ["x", "x", "wrong"], {})
    assert scored["a"].healed and not scored["b"].healed and scored["b"].examples[0]["why"]
    as_json = {p: {"violations": r.violations, "total": r.total} for p, r in scored.items()}
    history = [{"a": {"violations": 2, "total": 2}}, {"b": {"violations": 0, "total": 1}}]
    assert healed_and_recurred(as_json, history) == (["a"], ["b"])  # b was healed once, and is back
    split = {"a": {"violations": 0, "total": 2}, "b": {"violations": 1, "repeats_error": 0, "other_wrong": 1, "total": 1}}
    assert healed_and_recurred(split, history) == (["a"], [])  # b is wrong, but not with the corrected error
    split["b"].update(repeats_error=1, other_wrong=0)
    assert healed_and_recurred(split, history) == (["a"], ["b"])


def test_gate_rejects_recurrence_only_when_asked():
    s = GenerationScores(0.95, 0.9, 0, 0.0, 0, recurred=("planted-1",))
    assert gate(s, GateConfig()).accepted
    verdict = gate(s, GateConfig(no_recurrence=True))
    assert not verdict.accepted and "planted-1" in verdict.reason


def test_pattern_rules_are_checked_in_the_config():
    with pytest.raises(ConfigError, match="does not compile"):
        load_config(None, ["data.base=x", "healing.patterns={p: {forbid: ['(']}}"])


def test_weak_spots_rank_by_the_models_own_perplexity():
    import math

    import torch

    from evo.config import TinyModelConfig
    from evo.curation.weak import Scored, WeakReport, area_of, score_examples, weak_report
    from evo.data.records import Record
    from evo.model.loading import build_tiny_llama
    from evo.model.tokenizer import train_bpe_tokenizer
    from evo.train.examples import collate, encode, token_loss_sum

    tok = train_bpe_tokenizer(["tr red cat runs = zora zova bove"] * 30, 300)
    model = build_tiny_llama(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), tok).eval()
    recs = [Record("completion", "tr red cat runs =", " zora zova bove", category="translate"),
            Record("completion", "tr red cat eats =", " bove", category="translate"),
            Record("completion", "hello", " zova", category="chat")]
    scored = score_examples(model, tok, recs, 48, batch_size=2)
    for r, s in zip(recs, scored):  # batched per-example scores equal the training loss on each alone
        with torch.no_grad():
            b = collate([encode(r, tok, 48)], tok.pad_token_id)
            loss, n = token_loss_sum(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
        assert s.perplexity == pytest.approx(math.exp(loss / n), rel=1e-3)
    fake = [Scored(recs[0], 1.2), Scored(recs[1], 9.0), Scored(recs[2], 3.0)]
    rep = weak_report(fake, threshold=2.5, thresholds=[2, 4, 8], area="prefix:2")
    assert rep.above_threshold == [(2, 2), (4, 1), (8, 1)]
    assert rep.area_names == ["chat: hello", "translate: tr red"]  # by share above
    assert rep.worst[0]["perplexity"] == 9.0
    assert WeakReport.from_json(json.loads(json.dumps(rep.to_json()))) == rep  # what evo weak writes reads back
    strict = weak_report(fake, threshold=2.5, thresholds=[2], area="prefix:2", share=0.6)
    assert strict.area_names == ["chat: hello"]  # 1 of 2 above is not 60%
    assert area_of(recs[2], "category") == "chat"
    with pytest.raises(ValueError, match="unknown area grouping"):
        area_of(recs[0], "words")


def test_healing_items_leave_out_prompts_a_choice_was_made_on(tmp_path):
    """A paraphrase in a generation's val set (runs/<gen>/val.parquet: its checkpoint was chosen on
    it) is not asked, as one in a training mix is not: a healing number is measured on items nothing
    was trained or chosen on. Under split v3 the demo's gen-2 val part holds two of its paraphrases."""
    from evo.data.demo import write_demo_data
    from evo.data.records import Record
    from evo.data.store import write_records
    from evo.evals.lineage_evals import eval_spec
    from evo.healing.corrections import CorrectionStore, read_corrections_file
    from evo.lineage.root import Lineage

    cfg = load_config(write_demo_data(tmp_path / "d", generations=2))
    lin = Lineage(tmp_path / "root")
    corrections = CorrectionStore(lin.root).add(read_corrections_file(cfg.data.corrections[2]))
    chosen_on = Record("completion", "tr big owl swims =", " x y z", "", "translate")
    lin.run_dir("gen-2").mkdir(parents=True)
    write_records(lin.run_dir("gen-2") / "mix.parquet", [c.record() for c in corrections])
    write_records(lin.run_dir("gen-2") / "val.parquet", [chosen_on])
    spec = eval_spec(cfg, {}, [], [], lin)
    asked = {i.prompt for i in spec.healing}
    assert "tr big owl jumps =" in asked and "tr big owl swims =" not in asked
    assert "tr big owl swims =" in spec.healing_excluded
    assert not asked & {c.prompt for c in corrections}  # trained: not asked either
