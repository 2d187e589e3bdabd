"""Lineage decisions: each operation, a crash half way through, and applying twice.

Every test works on a real lineage root (registry.json, ledger.csv, decisions/) in a temp folder;
models are registry entries with made-up shas (no weights are needed to decide about them).
"""

import pytest

from evo.atomic import atomic_write_json
from evo.cli import main as evo_main
from evo.config import from_dict
from evo.driver import decide, restore_point
from evo.gate import GenerationScores
from evo.lineage.decisions import DecisionError
from evo.lineage.registry import Registry
from evo.lineage.root import Lineage

CFG = from_dict({"data": {"base": "x"}})
STALL = GenerationScores(0.95, 0.50, 3, 0.48, 1)  # gained 0.02 < epsilon while drift grew by 2 > theta
GOOD = GenerationScores(0.95, 0.9, 0, 0.5, 0)


def sha(i: int) -> str:
    return f"{i:x}" * 64


def row(gid: str, child: str, parent: str = "", decision: str = "promoted") -> dict:
    return {"GEN_ID": gid, "parent_sha": parent, "child_sha": child, "decision": decision, "reason": "test"}


def lineage(tmp_path, promoted: int = 0, scores=None) -> Lineage:
    """gen-0 (base, champion), then `promoted` generations each promoted over the one before."""
    lin = Lineage(tmp_path)
    lin.registry.add(sha(1), "gen-0", "", "candidate")
    lin.decisions.record(row("gen-0", sha(1)), sha(1), "base")
    for i in range(1, promoted + 1):
        train(lin, i)
        lin.decisions.record(row(f"gen-{i}", sha(i + 1), sha(i)), sha(i + 1), "promoted")
        if scores:
            atomic_write_json(lin.eval_path(f"gen-{i}"), {"scores": scores[i - 1].__dict__})
    return lin


def train(lin: Lineage, i: int) -> str:
    """What the driver does after training generation i: register the child and propose it."""
    parent = lin.registry.alias("champion")
    lin.registry.add(sha(i + 1), f"gen-{i}", parent, "candidate")
    lin.decisions.propose(f"gen-{i}", sha(i + 1), "trained")
    return parent


def state(lin: Lineage) -> tuple[bytes, bytes]:
    return lin.registry.path.read_bytes(), lin.ledger.path.read_bytes()


def test_recording_a_promotion_moves_the_champion_and_clears_the_candidate(tmp_path):
    lin = lineage(tmp_path)
    train(lin, 1)
    assert lin.registry.alias("candidate") == sha(2)
    d = lin.decisions.record(row("gen-1", sha(2), sha(1)), sha(2), "promoted")
    assert lin.registry.alias("champion") == sha(2) and lin.registry.alias("candidate") is None
    assert lin.registry.model(sha(2))["status"] == "promoted" and lin.ledger.get("gen-1")["decision"] == "promoted"
    assert d.path.parent == tmp_path / "decisions" and lin.decisions.log()[-1].applied
    assert [x.op for x in lin.decisions.log()] == ["record", "propose", "record"]


def test_a_rejection_keeps_the_champion(tmp_path):
    lin = lineage(tmp_path)
    train(lin, 1)
    lin.decisions.record(row("gen-1", sha(2), sha(1), "rejected"), sha(2), "rejected")
    assert lin.registry.alias("champion") == sha(1) and lin.registry.alias("candidate") is None
    assert lin.registry.model(sha(2))["status"] == "rejected"


def test_a_crash_between_the_ledger_write_and_the_alias_move_is_finished_once(tmp_path, monkeypatch):
    lin = lineage(tmp_path)
    train(lin, 1)
    real_move = Registry.move

    def crash_on_champion(self, alias, target, reason=""):
        if alias == "champion":
            raise SystemExit("killed")  # the process dies here: the ledger row is written, the alias not moved
        return real_move(self, alias, target, reason)

    monkeypatch.setattr(Registry, "move", crash_on_champion)
    with pytest.raises(SystemExit):
        lin.decisions.record(row("gen-1", sha(2), sha(1)), sha(2), "promoted")
    monkeypatch.setattr(Registry, "move", real_move)
    assert lin.ledger.get("gen-1")["decision"] == "promoted" and lin.registry.alias("champion") == sha(1)
    assert [d.op for d in lin.decisions.pending()] == ["record"]

    fresh = Lineage(tmp_path)  # the driver started again
    assert [d.op for d in fresh.decisions.reconcile()] == ["record"]
    assert fresh.registry.alias("champion") == sha(2) and fresh.registry.alias("candidate") is None
    assert not fresh.decisions.pending() and len(fresh.ledger.rows()) == 2

    before = state(fresh)
    fresh.decisions.reconcile()
    fresh.decisions._apply(fresh.decisions.log()[-1])  # a second apply of the same decision
    assert state(fresh) == before


def test_promote_and_reject_default_to_the_candidate(tmp_path):
    lin = lineage(tmp_path, promoted=1)
    parent, child = lin.decisions.stage_ab("gen-1")
    assert (lin.registry.alias("champion"), lin.registry.alias("candidate")) == (sha(1), sha(2)) == (parent, child)
    lin.decisions.promote(reason="A/B: candidate better", ab_result="candidate better: 9 / 3")
    assert lin.registry.alias("champion") == sha(2) and lin.registry.alias("candidate") is None
    assert lin.ledger.get("gen-1")["ab_result"] == "candidate better: 9 / 3"
    with pytest.raises(DecisionError, match="no candidate to promote"):
        lin.decisions.promote()

    lin.decisions.stage_ab("gen-1")
    lin.decisions.reject(reason="A/B: candidate worse")
    assert lin.registry.alias("champion") == sha(1) and lin.registry.alias("candidate") is None
    r = lin.ledger.get("gen-1")
    assert (r["decision"], r["reason"], lin.registry.model(sha(2))["status"]) == ("rejected", "A/B: candidate worse", "rejected")


def test_the_champion_cannot_be_rejected_only_reverted(tmp_path):
    lin = lineage(tmp_path, promoted=1)
    with pytest.raises(DecisionError, match="revert"):
        lin.decisions.reject("gen-1")
    assert lin.registry.alias("champion") == sha(2)


def test_revert_restores_a_named_earlier_generation(tmp_path):
    lin = lineage(tmp_path, promoted=3)
    lin.decisions.revert("gen-1", "gen-2 and gen-3 answer worse in production")
    assert lin.registry.alias("champion") == sha(2)
    for gid, s in (("gen-2", sha(3)), ("gen-3", sha(4))):
        r = lin.ledger.get(gid)
        assert (r["decision"], r["restored"], lin.registry.model(s)["status"]) == ("reverted", "gen-1", "reverted")
        assert "gen-2 and gen-3 answer worse" in r["reason"]
    assert lin.ledger.get("gen-1")["decision"] == "promoted"
    assert lin.decisions.line() == [sha(2), sha(1)]  # the next generation trains on gen-1, replays its line


def test_revert_refuses_what_is_not_an_earlier_generation_of_the_line(tmp_path):
    lin = lineage(tmp_path, promoted=1)
    train(lin, 2)
    lin.decisions.record(row("gen-2", sha(3), sha(2), "rejected"), sha(3), "rejected")
    before = state(lin)
    with pytest.raises(DecisionError, match="not on the champion's line"):
        lin.decisions.revert("gen-2")
    with pytest.raises(DecisionError, match="already the champion"):
        lin.decisions.revert("gen-1")
    with pytest.raises(DecisionError, match="no model of generation 'gen-9'"):
        lin.decisions.revert("gen-9")
    assert state(lin) == before and not lin.decisions.pending()


def test_the_stop_rule_restores_the_last_good_generation(tmp_path):
    lin = lineage(tmp_path, promoted=2, scores=[GOOD, STALL])  # gen-2 was promoted while it stalled
    parent = train(lin, 3)
    decision, reason = decide(CFG, lin, STALL)  # a second stalled generation in a row
    assert decision == "stopped" and "back to the last good generation, gen-1" in reason
    assert restore_point(CFG, lin) == "gen-1"
    lin.decisions.stop({**row("gen-3", sha(4), parent), "reason": reason}, sha(4), restore="gen-1")
    assert lin.registry.alias("champion") == sha(2) and lin.registry.alias("candidate") is None
    stopped, reverted = lin.ledger.get("gen-3"), lin.ledger.get("gen-2")
    assert (stopped["decision"], stopped["restored"], lin.registry.model(sha(4))["status"]) == ("stopped", "gen-1", "stopped")
    assert (reverted["decision"], reverted["restored"]) == ("reverted", "gen-1")


def test_one_stalled_generation_is_not_enough_to_stop(tmp_path):
    lin = lineage(tmp_path)
    assert decide(CFG, lin, STALL)[0] == "rejected"
    assert decide(CFG, lin, GOOD)[0] == "promoted"


def test_an_ab_round_left_unfinished_is_settled_by_the_recorded_verdict(tmp_path):
    lin = lineage(tmp_path, promoted=1)
    lin.decisions.stage_ab("gen-1")  # and the process serving the round died
    Lineage(tmp_path).decisions.reconcile()
    assert lin.registry.alias("champion") == sha(2) and lin.registry.alias("candidate") is None


def test_settling_never_makes_a_candidate_set_by_hand_champion(tmp_path):
    """An operator sets an old generation as candidate to rate it against the champion (as the
    rating page's test does): the next decision's reconcile used to take it for an unfinished A/B
    round and make it champion again ("the recorded verdict (promoted) stands"), the base over
    gen-2, compared with nothing. It stays the candidate and the champion stays."""
    lin = lineage(tmp_path, promoted=2)
    lin.registry.move("candidate", sha(1), reason="rate the champion against the base")
    Lineage(tmp_path).decisions.reconcile()
    assert (lin.registry.alias("champion"), lin.registry.alias("candidate")) == (sha(3), sha(1))
    lin.decisions.stage_ab("gen-2")  # a real round of gen-2, left unfinished, then a hand move
    lin.registry.move("champion", sha(3), reason="an operator puts the champion back")
    Lineage(tmp_path).decisions.reconcile()
    assert (lin.registry.alias("champion"), lin.registry.alias("candidate")) == (sha(3), sha(3))


def test_a_decision_file_of_the_older_layout_is_finished(tmp_path):
    lin = lineage(tmp_path)
    lin.registry.add(sha(2), "gen-1", sha(1), "candidate")
    atomic_write_json(lin.run_dir("gen-1") / "decision.json",  # written by an older evo that died before applying it
                      {"row": row("gen-1", sha(2), sha(1)), "child": sha(2), "status": "promoted", "champion": sha(2)})
    Lineage(tmp_path).decisions.reconcile()
    assert lin.registry.alias("champion") == sha(2) and lin.ledger.get("gen-1")["decision"] == "promoted"
    before = state(lin)
    Lineage(tmp_path).decisions.reconcile()
    assert state(lin) == before


def test_the_cli_decides_and_refuses_with_a_reason(tmp_path, capsys):
    lineage(tmp_path, promoted=2)
    assert evo_main(["revert", "--root", str(tmp_path), "--to", "gen-1", "--reason", "regression"]) == 0
    assert "champion:  " + sha(2) in capsys.readouterr().out
    assert evo_main(["reject", "--root", str(tmp_path)]) == 2
    assert "decision refused: there is no candidate to reject" in capsys.readouterr().err


def decided(lin: Lineage, i: int, parent: int, verdict: str, scores: GenerationScores) -> None:
    """Generation i, trained from the model sha(parent), decided with `verdict` on `scores`."""
    gid = f"gen-{i}"
    lin.registry.add(sha(i + 1), gid, sha(parent), "candidate")
    lin.decisions.propose(gid, sha(i + 1), "trained")
    atomic_write_json(lin.eval_path(gid), {"scores": scores.__dict__})
    lin.decisions.record(row(gid, sha(i + 1), sha(parent), verdict), sha(i + 1), verdict)


def test_the_stop_rule_reads_the_champions_line_only(tmp_path):
    """A branch and a revert: rows off the champion's line neither fire the rule nor keep it from firing."""
    lin = lineage(tmp_path)
    decided(lin, 1, 1, "promoted", GOOD)
    decided(lin, 2, 2, "promoted", STALL)  # a stalled, drifting generation that got through the gate
    decided(lin, 3, 3, "rejected", GOOD)  # a sibling branch off gen-2 (a fine-tuning job), set aside
    decision, reason = decide(CFG, lin, STALL)
    assert decision == "stopped" and "generation, gen-1" in reason  # gen-2 and this child stalled in a row

    lin.decisions.revert("gen-1", "gen-2 answers worse")  # gen-2 and its stall leave the line
    decided(lin, 4, 2, "rejected", STALL)  # gen-1's child, stalled, rejected by the gate: not on the line
    assert decide(CFG, lin, STALL)[0] == "rejected"  # the line (gen-1) did not stall: one stalled child
    decided(lin, 5, 2, "promoted", STALL)
    assert decide(CFG, lin, STALL)[0] == "stopped" and restore_point(CFG, lin) == "gen-1"
