"""The targeted-vs-random experiment's own parts, without Ray: the arms' holdouts, the given
evaluation file, and answers scored whole."""

from __future__ import annotations

import json
import random

import pytest

from evo.config import EvoConfig, TinyModelConfig
from evo.curation.targeted import TargetedError, key_of
from evo.data.demo import DemoGenerator
from evo.data.records import Record
from evo.experiment import _arm_mix, _sets, score_records
from evo.model.loading import build_tiny_llama
from evo.model.tokenizer import train_bpe_tokenizer


def test_both_arms_train_on_as_many_records():
    """Each arm holds out its validation records from its own data; a split by hash fraction held out
    a different count of each, so "as many records" trained on different numbers."""
    cfg, gen = EvoConfig(data={"base": "b.jsonl"}), DemoGenerator(0)
    for s in range(8):
        pool = gen.sample(200, random.Random(s))
        targeted, randoms = pool[:40], pool[40:80]
        (mt, vt), (mr, vr) = _arm_mix(cfg, targeted, [], s, 1), _arm_mix(cfg, randoms, [], s, 1)
        assert mt.n_delta == mr.n_delta == 40 - len(vt) and len(vt) == len(vr) >= 2, s
        assert not {r.sha for r in vt} & {r.sha for r in mt.records}  # held out means not trained on


def test_a_given_evaluation_file_leaves_out_the_lines_prompts(tmp_path):
    """--data FILE: the prompts the start model's line trained or tested on are not evaluated, as a drawn
    set's never are; a file of nothing else is refused."""
    line = [Record("completion", f"tr red fox {v} =", " x") for v in ("runs", "eats")]
    given = line + [Record("completion", "tr big owl sees =", " y")]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps({"prompt": r.prompt, "completion": r.completion}) + "\n" for r in given))
    probes = tmp_path / "probe.jsonl"
    probes.write_text(json.dumps({"prompt": "tr shy cat digs =", "completion": " z"}) + "\n")
    known = {key_of(r) for r in line}
    evals, _ = _sets(None, tmp_path / "seed-0", 0, str(path), str(probes), 40, 120, known)
    assert [r.prompt for r in evals] == ["tr big owl sees ="]
    path.write_text("".join(json.dumps({"prompt": r.prompt, "completion": r.completion}) + "\n" for r in line))
    with pytest.raises(TargetedError, match="every one of its 2 prompts is in the start model's line"):
        _sets(None, tmp_path / "seed-1", 1, str(path), str(probes), 40, 120, known)


def test_answers_are_scored_whole_not_cut_at_max_new_tokens():
    """The experiment's accuracy gives each answer room for its reference, as the gate's exact match
    does: at 2 new tokens no reference of 8 words could ever match."""
    words = "the lamp costs forty five florins in the town".split()
    tok = train_bpe_tokenizer([" ".join(words)] * 30, 300)
    model = build_tiny_llama(TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), tok, 0)
    records = [Record("completion", "price?", " the lamp costs forty five florins in the town", "", "price")]
    got = score_records(model, tok, records, ["price"], "category", 32, 2)
    longest = len(tok(records[0].completion, add_special_tokens=False)["input_ids"])
    assert longest > 2 and got["budget"] >= longest + 1
    assert got["overall"]["n"] == got["areas"]["n"] == 1
