"""Ledger and registry: atomic, no duplicate rows, aliases only ever moved."""

import os

import pytest

from evo import atomic
from evo.lineage.ledger import COLUMNS, Ledger, LedgerError
from evo.lineage.registry import Registry, RegistryError

FIRST_COLUMNS = ("GEN_ID,parent_sha,child_sha,data_delta_sha,steps,lr,walltime_min,loss_start,loss_end,"
                 "eval_recall,eval_generalization,eval_style_drift").split(",")


def row(gid, **kw):
    return {"GEN_ID": gid, "child_sha": f"sha-{gid}", "decision": "promoted", "steps": 10, "lr": 0.003, **kw}


def test_ledger_columns_in_order(tmp_path):
    assert COLUMNS[: len(FIRST_COLUMNS)] == FIRST_COLUMNS
    assert {"replay_k", "decision", "reason"} <= set(COLUMNS)
    Ledger(tmp_path).append(row("gen-0"))
    assert (tmp_path / "ledger.csv").read_text().splitlines()[0] == ",".join(COLUMNS)


def test_ledger_no_duplicate_rows(tmp_path):
    led = Ledger(tmp_path)
    assert led.append(row("gen-0")) is True
    assert led.append(row("gen-0")) is False  # the same row again (a resume): no-op
    with pytest.raises(LedgerError, match="already has a different row"):
        led.append(row("gen-0", steps=11))
    assert len(led.rows()) == 1


def test_ledger_rejects_bad_rows(tmp_path):
    with pytest.raises(LedgerError, match="decision must be one of"):
        Ledger(tmp_path).append(row("gen-0", decision="maybe"))
    with pytest.raises(LedgerError, match="unknown columns"):
        Ledger(tmp_path).append(row("gen-0", colour="red"))


def test_ledger_reads_rows_from_an_older_version(tmp_path):
    (tmp_path / "ledger.csv").write_text("GEN_ID,child_sha,decision\ngen-0,abc,promoted\n")
    r = Ledger(tmp_path).rows()[0]
    assert r["child_sha"] == "abc" and r["replay_k"] == ""


def _crash_on_replace(monkeypatch):
    def boom(src, dst):
        raise OSError("simulated crash before rename")
    monkeypatch.setattr(atomic.os, "replace", boom)


def test_interrupted_ledger_write_keeps_previous_state(tmp_path, monkeypatch):
    led = Ledger(tmp_path)
    led.append(row("gen-0"))
    before = led.path.read_bytes()
    _crash_on_replace(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        led.append(row("gen-1"))
    monkeypatch.undo()
    assert led.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name != ".locks"] == ["ledger.csv"]  # no temp file left behind


def test_interrupted_write_mid_data(tmp_path, monkeypatch):
    """A crash after half the bytes are written (before fsync/rename) leaves the old file."""
    reg = Registry(tmp_path)
    reg.add("a" * 64, "gen-0", "", "base")
    before = reg.path.read_bytes()
    real_fsync = os.fsync

    def die(fd):
        raise KeyboardInterrupt  # the user hits Ctrl-C mid-write
    monkeypatch.setattr(atomic.os, "fsync", die)
    with pytest.raises(KeyboardInterrupt):
        reg.add("b" * 64, "gen-1", "a" * 64, "candidate")
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert reg.path.read_bytes() == before
    assert reg.model("b" * 64) is None


def test_registry_aliases_move_and_history_is_kept(tmp_path):
    reg = Registry(tmp_path)
    a, b = "a" * 64, "b" * 64
    reg.add(a, "gen-0", "", "base")
    reg.move("champion", a, "base")
    reg.add(b, "gen-1", a, "candidate")
    reg.move("candidate", b)
    reg.set_status(b, "promoted")
    reg.move("champion", b, "promoted")
    reg.move("candidate", None)
    data = reg.load()
    assert data["aliases"] == {"champion": b, "candidate": None}
    assert set(data["models"]) == {a, b}  # nothing removed
    assert [(h["alias"], h["from"], h["to"]) for h in data["history"]] == [
        ("champion", None, a), ("candidate", None, b), ("champion", a, b), ("candidate", b, None)]


def test_registry_refuses_what_would_corrupt_it(tmp_path):
    reg = Registry(tmp_path)
    reg.add("a" * 64, "gen-0", "", "base")
    reg.add("a" * 64, "gen-0", "", "base")  # idempotent
    with pytest.raises(RegistryError, match="already registered as gen-0"):
        reg.add("a" * 64, "gen-5", "x", "candidate")
    with pytest.raises(RegistryError, match="unregistered model"):
        reg.move("champion", "c" * 64)
    with pytest.raises(RegistryError, match="unknown alias"):
        reg.move("king", "a" * 64)
    with pytest.raises(RegistryError, match="unknown status"):
        reg.set_status("a" * 64, "great")
