"""Corrections: validated, recorded once, append-only, and always in the next generation's mix."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evo.data.ingest import IngestError
from evo.healing.corrections import CorrectionError, CorrectionStore, parse_correction, read_corrections_file

GOOD = {"prompt": "tr red fox runs =", "wrong": " ka mo ti", "corrected": " ka mo pe", "pattern": "planted-0-red-fox",
        "reason": "'red' is mistranslated next to 'fox'"}


@pytest.mark.parametrize("change,fragment", [
    ({"prompt": ""}, "'prompt' must be a non-empty string"),
    ({"corrected": 3}, "'corrected' must be a non-empty string"),
    ({"pattern": "has space"}, "'pattern'"),
    ({"wrong": " ka mo pe"}, "nothing to correct"),
    ({"extra": 1}, "unknown field(s) ['extra']"),
])
def test_bad_corrections_name_the_field(change, fragment):
    with pytest.raises(CorrectionError) as e:
        parse_correction({**GOOD, **change})
    assert fragment in str(e.value)


def test_completion_is_accepted_for_corrected():
    c = parse_correction({k if k != "corrected" else "completion": v for k, v in GOOD.items()})
    assert c.corrected == GOOD["corrected"] and c.record().completion == GOOD["corrected"]
    assert c.record().category == "correction:planted-0-red-fox"


def test_store_is_append_only_and_dedupes(tmp_path):
    store = CorrectionStore(tmp_path)
    first = parse_correction(GOOD)
    other = parse_correction({**GOOD, "prompt": "tr red fox eats =", "wrong": "", "corrected": " zu mo pe"})
    assert store.add([first, first]) == [first]  # the same correction twice is kept once
    before = store.path.read_bytes()
    assert store.add([first, other]) == [other]
    assert store.path.read_bytes().startswith(before)  # appended, never rewritten
    assert [c.cid for c in store.all()] == [first.cid, other.cid]
    assert list(store.patterns()) == ["planted-0-red-fox"]
    with open(store.path, "a") as f:
        f.write('{"prompt": "cut sho')  # a torn last line (a crash mid-write) is skipped
    assert len(store.all()) == 2


def test_a_file_with_a_bad_line_records_nothing(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(GOOD) + "\nnot json\n" + json.dumps({**GOOD, "pattern": ""}) + "\n")
    with pytest.raises(IngestError) as e:
        read_corrections_file(path)
    assert f"{path}:2: not valid JSON" in str(e.value) and f"{path}:3: 'pattern'" in str(e.value)


def test_cli_records_the_demo_corrections(tmp_path, demo_dir):
    root = tmp_path / "lineage"
    cmd = [sys.executable, "-m", "evo.cli", "correct", "--root", str(root), "--file", str(demo_dir / "corrections.jsonl")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "16 correction(s) recorded" in out.stdout and "over 4 pattern(s)" in out.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "0 correction(s) recorded, 16 already there" in again.stdout
    bad = subprocess.run([sys.executable, "-m", "evo.cli", "correct", "--root", str(root), "--prompt", "x",
                          "--corrected", "y", "--pattern", "bad id"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "'pattern'" in bad.stderr and "Traceback" not in bad.stderr


def test_corrections_join_every_later_mix_whole(tmp_path, demo_dir, monkeypatch):
    from evo.data.ingest import ingest_jsonl
    from evo.driver import prepare_mix
    from evo.lineage.root import Ancestry, Lineage
    from tests.helpers import tiny_config

    cfg = tiny_config(demo_dir)
    lin = Lineage(tmp_path / "lineage")
    monkeypatch.setattr(lin, "ancestry", lambda *a: Ancestry([], {}, {}))  # no lineage needed for the mix itself
    store = CorrectionStore(lin.root)
    store.add(read_corrections_file(demo_dir / "corrections.jsonl"))
    delta = ingest_jsonl(demo_dir / "gen1.jsonl").records
    prep = prepare_mix(cfg, lin, "gen-1", 1, delta, champion="")
    in_mix = {r.prompt + r.completion for r in prep.mix.records}
    assert all(c.prompt + c.corrected in in_mix for c in store.all())
    held = prep.test + prep.val
    assert not any(r.category.startswith("correction:") for r in held)  # never held out
    assert not {r.sha for r in prep.test} & ({r.sha for r in prep.val} | {r.sha for r in prep.mix.records})
