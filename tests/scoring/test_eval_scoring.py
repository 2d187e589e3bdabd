"""How the evals score what a model says (the model's words are fixed here; the counting is real)."""

import pytest

from evo.data.records import parse_record
from evo.evals import suite
from evo.evals.suite import EvalSpec, accuracy, load_probes, style_drift


class Tok:
    """Words are tokens."""

    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}


def spec(**kw):
    return EvalSpec(qa_sets={}, holdout=[], probes=kw.pop("probes", []), banned_phrases=kw.pop("banned", []), val=[], **kw)


def fixed_replies(monkeypatch, replies):
    monkeypatch.setattr(suite, "greedy", lambda model, tok, prompts, n, b: replies[: len(prompts)])


def test_exact_match_ignores_spacing_only(monkeypatch):
    recs = [parse_record({"prompt": f"p{i}", "completion": c}) for i, c in enumerate([" a b", " c d", " e f"])]
    fixed_replies(monkeypatch, ["a  b", " c d ", "e F"])
    acc = accuracy(None, Tok(), recs, spec())
    assert (acc.correct, acc.total) == (2, 3) and acc.value == pytest.approx(2 / 3)
    assert acc.misses == [{"prompt": "p2", "expected": " e f", "got": "e F"}]


def test_quality_per_category_pools_every_qa_set(monkeypatch):
    from evo.evals.suite import quality_by_category

    recs = [parse_record({"prompt": f"p{i}", "completion": " ok", "category": c})
            for i, c in enumerate(["chat", "chat", "translate", ""])]
    fixed_replies(monkeypatch, ["ok", "no", "ok", "ok"])
    first = accuracy(None, Tok(), recs, spec())
    assert first.by_category == {"chat": [1, 2], "translate": [1, 1], "uncategorized": [1, 1]}
    fixed_replies(monkeypatch, ["no"])
    second = accuracy(None, Tok(), recs[2:3], spec())
    q = quality_by_category([first, second])
    assert q["chat"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert q["translate"] == {"correct": 1, "total": 2, "accuracy": 0.5} and list(q) == ["chat", "translate", "uncategorized"]


def test_style_drift_counts_probes_with_a_banned_phrase(monkeypatch):
    fixed_replies(monkeypatch, ["As an AI, tea is nice.", "tea is nice.", "certainly! yes", "i cannot and certainly!"])
    probes = [parse_record({"prompt": p, "completion": "-"}) for p in "abcd"]
    d = style_drift(None, Tok(), spec(probes=probes, banned=["as an ai", "certainly!", "i cannot"]))
    assert (d.hits, d.total) == (3, 4)
    assert [f["phrase"] for f in d.flagged] == ["as an ai", "certainly!", "certainly!"]


def test_probes_use_the_models_chat_template(tmp_path):
    from evo.model.prompts import prompt_and_completion

    class Templated:
        chat_template = "x"

        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            return "".join(f"<{m['role']}>{m['content']}" for m in msgs) + ("<assistant>" if add_generation_prompt else "")

    p = tmp_path / "p.jsonl"
    p.write_text('{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}\n')
    (probe,) = load_probes(p)
    assert prompt_and_completion(probe, Templated())[0] == "<system>s<user>hi<assistant>"
    assert prompt_and_completion(probe, Tok())[0] == "system: s\nuser: hi\nassistant:"


def test_probe_file_shapes_and_errors(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "hello"}\n\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert [r.prompt for r in load_probes(p)] == ["hello", "user: hi\nassistant:"]
    p.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: a probe needs"):
        load_probes(p)


def test_an_answer_is_never_cut_before_its_reference_could_match(monkeypatch):
    """eval.max_new_tokens is a floor: an exact-match item may generate its reference's length and an
    end token (the SmolLM2 demo's 24 cut every 25-28-token chat reply short, so chats always scored 0)."""
    ref = " ".join(f"w{i}" for i in range(30))
    recs = [parse_record({"prompt": "tell me", "completion": ref}), parse_record({"prompt": "short", "completion": "ok"})]
    budgets = []

    def generate(model, tok, prompts, n, b):  # a model that says the reference, cut at the budget
        budgets.append(n)
        return [" ".join(ref.split()[:n]), "ok"]

    monkeypatch.setattr(suite, "greedy", generate)
    acc = accuracy(None, Tok(), recs, spec(max_new_tokens=24))
    assert budgets == [32] and (acc.correct, acc.total) == (2, 2)
    assert suite.answer_budget(Tok(), ["a b"], 24) == 24  # short references keep the configured budget


def result(hits: int, probes: int = 10, general=None):
    from evo.evals.suite import Accuracy, StyleDrift, SuiteResult

    return SuiteResult(0.95, {}, Accuracy(9, 10), StyleDrift(hits, probes), None, general=general)


def test_the_gate_sees_the_probe_count_and_passes_an_inherited_drift():
    """scores_of carries the n of each rate to the gate: the demo's base hits 2 of 10 probes and so
    does its child (rejected as 'style drift 2 >= 2' before issue 26); a jump to 8 is rejected."""
    from evo.config import GateConfig
    from evo.evals.lineage_evals import base_flags_of, scores_of
    from evo.gate import gate

    s = scores_of(result(2), result(2))
    assert (s.style_drift, s.parent_style_drift, s.style_probes) == (2, 2, 10)
    assert gate(s, GateConfig()).accepted
    assert not gate(scores_of(result(8), result(2)), GateConfig()).accepted
    cfg = load_config_with_gate(max_style_drift=2)
    assert base_flags_of(cfg, result(2)) == ["style drift 2 >= 2 (gate.max_style_drift)"]


def test_the_general_counts_reach_the_gate():
    from evo.evals.general import GeneralResult
    from evo.evals.lineage_evals import scores_of

    def general(correct, words, fake):
        return GeneralResult(correct / 40, correct, 40, 50, 0.1, 100, fake / words, words, [], 0.5, 0.8, 0.05,
                             bigrams=300, trigrams=280)

    s = scores_of(result(0, general=general(34, 1000, 3)), result(0, general=general(36, 900, 2)))
    assert (s.general_counted, s.words, s.parent_words, s.bigrams, s.parent_trigrams) == (40, 1000, 900, 300, 280)
    assert (s.general_accuracy, s.parent_general_accuracy) == (34 / 40, 36 / 40)


def load_config_with_gate(**gate):
    from evo.config import EvoConfig

    return EvoConfig(data={"base": "base.jsonl"}, gate=gate)


def test_selection_is_scored_on_val_probes_never_on_the_reported_ones(tmp_path):
    """A sweep's winner is chosen on `eval.val_probes` (the spec built without a lineage); the gate
    and the report use `eval.probes`. The shipped domains write both, none a near-copy of the other,
    and a val probe set that copies a reported probe is refused before anything runs."""
    from evo.config import load_config
    from evo.data.demo import write_demo_data
    from evo.data.ingest import IngestError
    from evo.data.shop import write_shop_data
    from evo.evals.lineage_evals import eval_spec
    from evo.inputs import check_probe_sets

    for cfg_path in (write_shop_data(tmp_path / "shop", generations=1), write_demo_data(tmp_path / "demo", generations=1)):
        cfg = load_config(cfg_path)
        reported = {p.messages for p in load_probes(cfg.eval.probes)}
        chosen_on = eval_spec(cfg, {}, [], [])  # what choose_winner is given (Prepared.selection_spec)
        assert chosen_on.probes and not {p.messages for p in chosen_on.probes} & reported
        check_probe_sets(cfg)
        without = eval_spec(cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"val_probes": None})}), {}, [], [])
        assert without.probes == []  # no val probes: selection scores none, never the reported ones
    copied = tmp_path / "copied.jsonl"
    copied.write_text('{"messages": [{"role": "user", "content": "Say something about the weather!"}]}\n')
    cfg = load_config(cfg_path, [f"eval.val_probes={copied}", "eval.probes=probes.jsonl"])
    with pytest.raises(IngestError, match="1 of eval.val_probes are near-copies of eval.probes"):
        check_probe_sets(cfg)
