"""Test parts no training record reaches, corrections that replace what they correct, and each
delta's split kept as it was recorded (issue 28 items 1, 2 and 7's fractions), on the shop domain's
data over several catalogue seeds: the leaks depend on the seed. No Ray, no training: the lineages
are real roots with stand-in weights (a model's file is never read here), and the mixes are the
driver's own `prepare_mix`."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from evo.config import load_config
from evo.data.ingest import ingest_jsonl
from evo.data.mix import KeptApart, build_mix
from evo.data.records import Record
from evo.data.shop import write_shop_data
from evo.data.store import delta_parts, questions
from evo.driver import ingest, prepare_mix
from evo.healing.corrections import CorrectionStore, corrected_answers, read_corrections_file, retire_scored
from evo.lineage.ledger import print_ledger
from evo.lineage.root import Lineage
from evo.progress import Silent
from evo.report import kept_apart_section

# Seeds 0..7: under the record-hash split (main before issue 28), every seed but 1 has a test item
# that asks (in some turn) a question trained in gen-1's or gen-2's mix, seeds 1, 4, 5 and 6 score a
# planted error in gen-1's test part, and every seed replays planted records beside the correction
# (bench/bench_leaks.py --shop-seeds counts 34, 14 and 40 of 40 seeds).
SEEDS = range(8)


def _weights(folder: Path, name: str, value: float) -> None:
    save_file({"w": torch.full((2,), value)}, str(folder / name))


def shop_line(tmp: Path, seed: int, overrides: list[str] = ()):
    """A real lineage root with the shop's gen-0 (stand-in weights) and gen-1 (its delta ingested by
    the driver, a stand-in adapter), gen-2's corrections recorded and its delta ingested: what
    `run_generation` has done when it builds gen-2's mix. Returns (cfg, lineage, gen-1's model, gen-2's delta)."""
    cfg_path = write_shop_data(tmp / "data", generations=2, seed=seed)
    cfg = load_config(cfg_path, ["train.replay_k=100000", *overrides])  # replay the whole pool
    lin = Lineage(tmp / "root")

    def base(folder: Path) -> None:
        _weights(folder, "model.safetensors", 0.0)

    b = lin.models.put_base(base, {"gen_id": "gen-0", "data_delta_sha": ""})
    lin.registry.add(b, "gen-0", "", "base")
    lin.ledger.append({"GEN_ID": "gen-0", "child_sha": b, "decision": "promoted", "split": "v3"})
    sha1 = ingest(lin, cfg.data.generations[0], cfg, Silent(), "gen-1")
    adapter = tmp / "adapter"
    adapter.mkdir()
    _weights(adapter, "adapter_model.safetensors", float(seed + 1))
    (adapter / "adapter_config.json").write_text("{}")
    a1 = lin.models.put_adapter(adapter, b, {"gen_id": "gen-1"})
    lin.registry.add(a1, "gen-1", b, "promoted")
    lin.ledger.append({"GEN_ID": "gen-1", "parent_sha": b, "child_sha": a1, "data_delta_sha": sha1,
                       "decision": "promoted", "split": "v3"})
    CorrectionStore(lin.root).add(read_corrections_file(cfg.data.corrections[2]))
    sha2 = ingest(lin, cfg.data.generations[1], cfg, Silent(), "gen-2")
    return cfg, lin, a1, lin.data.get(sha2)


@pytest.fixture(scope="module", params=SEEDS)
def line(request, tmp_path_factory):
    """One shop line per seed, shared by the tests of items 1 and 2: (cfg, lineage, gen-1's model,
    gen-2's delta, the data folder)."""
    tmp = tmp_path_factory.mktemp(f"shop{request.param}")
    return (*shop_line(tmp, request.param), tmp / "data")


def test_no_training_record_asks_a_test_question(line):
    """Item 1: the split is by normalized question, every user turn: no record of gen-2's mix (its
    delta, the replayed gen-1 records) asks, in any turn, a question of a test part it is scored on
    (corrections, trained on purpose, aside), and each delta alone keeps its test questions out of
    its training part (by the question that placed each held record)."""
    cfg, lin, a1, delta, data = line
    prep = prepare_mix(cfg, lin, "gen-2", 2, delta, a1)
    corrections = {c.record().sha for c in CorrectionStore(lin.root).all()}
    tested = {q for part in [prep.test, *prep.ancestry.test.values()] for r in part for q in questions(r)}
    asked = {q for r in prep.mix.records if r.sha not in corrections for q in questions(r)}
    assert not tested & asked, sorted(tested & asked)[:3]
    assert prep.split.scheme == "v3" and prep.kept_apart["scheme"] == "v3"
    for g in (1, 2):
        parts = delta_parts(ingest_jsonl(data / f"gen{g}.jsonl").records, 0.1, 0.1)
        trained = {q for r in parts.train for q in questions(r)}
        # the question that placed a held record is never trained (a chat's context turns may be:
        # those records are left out of the mix, above)
        assert parts.test and all(set(questions(r)) - trained for r in parts.test + parts.val)


def test_a_record_asking_a_test_question_is_left_out_and_counted():
    """Item 1: a training or replay record that asks a test-part question in any turn (here the
    second) is left out of the mix, and the mix's summary says how many."""
    test = [Record("completion", "Who designed the Ostira saw?", " Ilsa Brindle.")]
    chat = json.dumps([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
                       {"role": "user", "content": "who designed the  Ostira saw"},
                       {"role": "assistant", "content": "Ilsa Brindle."}])
    leaking = Record("chat", "", " Ilsa Brindle.", chat)
    other = Record("completion", "Where is the Ostira saw made?", " In Varnholt.")
    mix = build_mix([other], [leaking, other], 10, [], 0, apart=KeptApart.of([test]))
    assert leaking not in mix.records and mix.records.count(other) == 2
    assert mix.left_out == {"test": 1, "retired": 0}
    assert "left out 1 that ask a test-part question" in mix.summary()


def test_a_correction_retires_what_it_corrects(line):
    """Item 2: once the planted prices are corrected, no record but the corrections asks a corrected
    question in gen-2's mix (the planted gen-1 records are not replayed beside the fix), and every
    scored test item that asks one is scored against the corrected answer, listed in kept_apart.json."""
    cfg, lin, a1, delta, _ = line
    corrections = CorrectionStore(lin.root).all()
    fixed = corrected_answers(corrections)
    prep = prepare_mix(cfg, lin, "gen-2", 2, delta, a1)
    own = {c.record().sha for c in corrections}
    assert all(c.record() in prep.mix.records for c in corrections)
    stale = [r for r in prep.mix.records if r.sha not in own and any(q in fixed for q in questions(r))]
    assert not stale, stale[:2]
    assert prep.mix.left_out["retired"] > 0  # gen-1's planted records were in the replay pool
    scored = [r for part in [prep.test, *prep.ancestry.test.values(), prep.val] for r in part]
    wrong = [r for r in scored if (c := fixed.get(questions(r)[-1])) and r.completion.split() != c.corrected.split()]
    assert not wrong, wrong[:2]
    gen1_test = delta_parts(lin.data.get(lin.ledger.get("gen-1")["data_delta_sha"]), 0.1, 0.1).test
    planted = [r for r in gen1_test if questions(r)[-1] in fixed]
    report = json.loads((lin.run_dir("gen-2") / "kept_apart.json").read_text())
    assert len(report["retired_scored"].get("gen-1", [])) == len(planted)
    for item in report["retired_scored"].get("gen-1", []):
        assert item["now"] == fixed[item["prompt"]].corrected.strip() and item["was"] != item["now"]


def test_retire_scored_drops_a_chat_whose_context_states_the_error():
    fix = corrected_answers(read_corrections_file_from([{"prompt": "What is the price of the X saw?",
                                                         "wrong": " 83", "corrected": " 63", "pattern": "p"}]))
    chat = json.dumps([{"role": "user", "content": "What is the price of the X saw?"},
                       {"role": "assistant", "content": "83"}, {"role": "user", "content": "And the Y?"},
                       {"role": "assistant", "content": "12"}])
    kept, retired = retire_scored([Record("chat", "", " 12", chat),
                                   Record("completion", "what is the price of the X saw", " 83")], fix)
    assert kept == [Record("completion", "what is the price of the X saw", " 63")]
    assert [r["now"] for r in retired] == ["", "63"]


def read_corrections_file_from(rows: list[dict]):
    from evo.healing.corrections import parse_correction  # the same parser the file goes through

    return [parse_correction(r) for r in rows]


@pytest.mark.parametrize("seed", [1, 5])
def test_a_delta_keeps_the_fractions_it_was_ingested_with(tmp_path, seed):
    """Item 7: a later `--set data.test_fraction=...` does not re-split an ancestor: gen-1's test part
    (recall) and its training part (replay) are those of the fractions it was ingested with, so no
    record gen-1 trained on moves into a test part."""
    cfg, lin, a1, delta = shop_line(tmp_path, seed)
    sha1 = lin.ledger.get("gen-1")["data_delta_sha"]
    then = delta_parts(lin.data.get(sha1), 0.1, 0.1)
    wider = load_config(tmp_path / "data" / "shop.yaml", ["data.test_fraction=0.3", "train.replay_k=100000"])
    anc = lin.ancestry(a1, wider.data.val_fraction, wider.data.test_fraction)
    assert anc.test["gen-1"] == then.test and anc.pool == then.train
    prep = prepare_mix(wider, lin, "gen-2", 2, delta, a1)
    assert prep.split.test_fraction == 0.1  # gen-2's delta was ingested under 0.1 too
    assert not {r.sha for r in then.train} & {r.sha for part in prep.ancestry.test.values() for r in part}


def test_the_ledger_says_when_generalization_measures_rewording(tmp_path, capsys):
    """Item 1: the shop's test answers are training completions under another wording of the question;
    `evo ledger` shows how many (test_answers_trained) and says what that means."""
    cfg, lin, a1, delta = shop_line(tmp_path, 0)
    prep = prepare_mix(cfg, lin, "gen-2", 2, delta, a1)
    n, m = prep.kept_apart["test_answers_trained"]
    assert m == len(prep.test) and 0 < n <= m  # the shop's answers are the same sentence for every wording
    lin.ledger.update("gen-1", test_answers_trained=f"{n}/{m}")
    print_ledger(lin.root, as_json=False)
    out = capsys.readouterr().out
    assert f"{n}/{m}" in out and "measures rewording" in out


def test_the_report_lists_retired_test_items_and_what_generalization_measures(line):
    """Items 1 and 2: the report's kept-apart section names each retired test item with its corrected
    answer, and says that the shop's generalization measures rewording."""
    cfg, lin, a1, delta, _ = line
    prep = prepare_mix(cfg, lin, "gen-2", 2, delta, a1)
    lin.ledger.append({"GEN_ID": "gen-2", "parent_sha": a1, "child_sha": "c" * 64, "decision": "rejected",
                       "data_delta_sha": lin.ledger.get("gen-1")["data_delta_sha"], "split": "v3"})
    html_text = kept_apart_section(lin.root, lin.ledger.rows())
    assert "generalization measures rewording" in html_text
    for items in prep.kept_apart["retired_scored"].values():
        for it in items:
            assert html.escape(it["prompt"]) in html_text and html.escape(repr(it["now"])) in html_text
