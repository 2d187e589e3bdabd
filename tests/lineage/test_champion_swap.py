"""A decision applies to the champion it was compared with (issue 26, item 1).

A promotion and a stop are compare-and-swaps: they apply only while the champion is still the model
the child was compared with (by default its parent). Real lineage roots in a temp folder; models are
registry entries with made-up shas, as in test_decisions.py.
"""

import pytest

from evo.lineage.decisions import ChampionMoved
from evo.lineage.ledger import COLUMNS, Ledger
from evo.lineage.root import Lineage


def sha(i: int) -> str:
    return f"{i:x}" * 64


def row(gid: str, child: str, parent: str, decision: str = "promoted", **more) -> dict:
    return {"GEN_ID": gid, "parent_sha": parent, "child_sha": child, "decision": decision, "reason": "test", **more}


def state(lin: Lineage) -> tuple[bytes, bytes, list]:
    return lin.registry.path.read_bytes(), lin.ledger.path.read_bytes(), sorted(lin.decisions.folder.glob("*.json"))


def trained(lin: Lineage, gid: str, child: str, parent: str) -> None:
    """A child trained from `parent` (a job queued with model="champion" names the champion of that moment)."""
    lin.registry.add(child, gid, parent, "candidate")
    lin.decisions.propose(gid, child, "trained")


@pytest.fixture
def lin(tmp_path) -> Lineage:
    lin = Lineage(tmp_path)
    lin.registry.add(sha(1), "gen-0", "", "candidate")
    lin.decisions.record(row("gen-0", sha(1), ""), sha(1), "base")
    return lin


def test_two_jobs_from_the_champion_the_second_cannot_replace_the_first_uncompared(lin):
    trained(lin, "gen-1", sha(2), sha(1))  # both jobs queued while gen-0 was the champion
    trained(lin, "gen-2", sha(3), sha(1))
    lin.decisions.record(row("gen-1", sha(2), sha(1)), sha(2), "promoted")  # the first job's child
    before = state(lin)
    with pytest.raises(ChampionMoved, match=r"gen-2 was compared with gen-0 .* the champion is now gen-1") as e:
        lin.decisions.record(row("gen-2", sha(3), sha(1)), sha(3), "promoted")  # gated against gen-0 only
    assert (e.value.champion, e.value.champion_gen) == (sha(2), "gen-1")
    assert state(lin) == before and not lin.decisions.pending()  # nothing written: no row, no move
    assert lin.registry.alias("champion") == sha(2) and lin.ledger.get("gen-2") is None

    # scored again against gen-1 (the driver does that), its promotion applies, and its row says so
    lin.decisions.record(row("gen-2", sha(3), sha(1), compared_with=sha(2)), sha(3), "promoted")
    assert lin.registry.alias("champion") == sha(3)
    assert lin.ledger.get("gen-2")["compared_with"] == sha(2) and lin.ledger.get("gen-2")["parent_sha"] == sha(1)
    assert lin.ledger.get("gen-1")["compared_with"] == sha(1)  # compared with its parent, the champion then
    assert "gen-2: promoted over gen-1" in lin.registry.load()["history"][-2]["reason"]


def test_a_rejection_moves_no_champion_and_needs_no_swap(lin):
    trained(lin, "gen-1", sha(2), sha(1))
    trained(lin, "gen-2", sha(3), sha(1))
    lin.decisions.record(row("gen-1", sha(2), sha(1)), sha(2), "promoted")
    lin.decisions.record(row("gen-2", sha(3), sha(1), "rejected"), sha(3), "rejected")
    assert lin.registry.alias("champion") == sha(2) and lin.registry.model(sha(3))["status"] == "rejected"
    assert lin.ledger.get("gen-2")["compared_with"] == sha(1)


def test_a_stop_planned_against_a_champion_that_moved_is_refused(lin):
    """gen-3's stop rule read a line without gen-2; applied, it would revert gen-2 unseen."""
    trained(lin, "gen-1", sha(2), sha(1))
    lin.decisions.record(row("gen-1", sha(2), sha(1)), sha(2), "promoted")
    trained(lin, "gen-2", sha(3), sha(2))
    trained(lin, "gen-3", sha(4), sha(2))
    lin.decisions.record(row("gen-2", sha(3), sha(2)), sha(3), "promoted")
    before = state(lin)
    with pytest.raises(ChampionMoved, match="the champion is now gen-2"):
        lin.decisions.stop(row("gen-3", sha(4), sha(2), "stopped"), sha(4), restore="gen-1")
    assert state(lin) == before
    assert lin.registry.alias("champion") == sha(3) and lin.ledger.get("gen-2")["decision"] == "promoted"


def test_a_ledger_of_an_older_root_reads_and_grows_the_compared_with_column(tmp_path):
    old = [c for c in COLUMNS if c != "compared_with"]
    (tmp_path / "ledger.csv").write_text(",".join(old) + "\n" + ",".join(
        {"GEN_ID": "gen-0", "child_sha": sha(1), "decision": "promoted"}.get(c, "") for c in old) + "\n")
    ledger = Ledger(tmp_path)
    assert ledger.get("gen-0")["compared_with"] == ""
    ledger.append(row("gen-1", sha(2), sha(1), compared_with=sha(1)))
    assert [r["compared_with"] for r in ledger.rows()] == ["", sha(1)]
    assert (tmp_path / "ledger.csv").read_text().splitlines()[0] == ",".join(COLUMNS)


def test_a_promotion_that_names_the_champion_it_was_compared_with_is_a_swap_too(lin):
    """An A/B round's promote names the staged parent; a generation promoted meanwhile is not replaced."""
    trained(lin, "gen-1", sha(2), sha(1))
    lin.decisions.record(row("gen-1", sha(2), sha(1)), sha(2), "promoted")
    parent, child = lin.decisions.stage_ab("gen-1")  # gen-0 serves as champion, gen-1 as candidate
    lin.registry.add(sha(3), "gen-2", sha(1), "candidate")  # a job from gen-0, decided during the round
    lin.decisions.record(row("gen-2", sha(3), sha(1)), sha(3), "promoted")
    with pytest.raises(ChampionMoved, match="the champion is now gen-2"):
        lin.decisions.promote("gen-1", "A/B: candidate better", compared_with=parent)
    assert lin.registry.alias("champion") == sha(3)
    lin.decisions.promote("gen-1", "by hand")  # an operator's promote names no champion: it applies
    assert lin.registry.alias("champion") == sha(2)
