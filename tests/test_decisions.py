"""The driver's decision wiring: gate, stop rule over recorded history, and applying decisions."""

from evo.atomic import atomic_write_json
from evo.config import from_dict
from evo.driver import Lineage, apply_decision, commit_decision, decide, reconcile
from evo.gate import GenerationScores
from evo.progress import Silent

CFG = from_dict({"data": {"base": "x"}})
STALL = GenerationScores(0.95, 0.50, 3, 0.48, 1)


def seed_history(lin, scores):
    for i, s in enumerate(scores, start=1):
        gid = f"gen-{i}"
        lin.ledger.append({"GEN_ID": gid, "child_sha": f"c{i}", "decision": "rejected"})
        atomic_write_json(lin.eval_path(gid), {"scores": s.__dict__})


def test_second_stalled_generation_in_a_row_stops(tmp_path):
    lin = Lineage(tmp_path)
    assert decide(CFG, lin, STALL)[0] == "rejected"  # one is not enough
    seed_history(lin, [STALL])
    decision, reason = decide(CFG, lin, STALL)
    assert decision == "stopped" and "data needs fixing" in reason


def test_passing_generation_is_promoted(tmp_path):
    lin = Lineage(tmp_path)
    assert decide(CFG, lin, GenerationScores(0.95, 0.9, 0, 0.0, 0))[0] == "promoted"


def _registry(lin):
    lin.registry.add("b" * 64, "gen-0", "", "base")
    lin.registry.move("champion", "b" * 64)
    lin.registry.add("c" * 64, "gen-1", "b" * 64, "candidate")
    lin.registry.move("candidate", "c" * 64)


def test_decision_applies_once_even_if_interrupted(tmp_path):
    lin = Lineage(tmp_path)
    _registry(lin)
    row = {"GEN_ID": "gen-1", "child_sha": "c" * 64, "decision": "promoted"}
    # Written but not applied (the driver died right after writing the decision record):
    atomic_write_json(lin.decision_path("gen-1"), {"row": row, "child": "c" * 64, "status": "promoted", "champion": "c" * 64})
    assert lin.ledger.get("gen-1") is None
    reconcile(lin, Silent())
    reconcile(lin, Silent())  # and again: nothing changes
    assert len(lin.ledger.rows()) == 1
    assert lin.registry.alias("champion") == "c" * 64 and lin.registry.alias("candidate") is None
    apply_decision(lin, "gen-1")  # re-applying is harmless
    assert len(lin.ledger.rows()) == 1


def test_rejection_keeps_champion_and_clears_candidate(tmp_path):
    lin = Lineage(tmp_path)
    _registry(lin)
    row = {"GEN_ID": "gen-1", "child_sha": "c" * 64, "decision": "rejected"}
    commit_decision(lin, "gen-1", row, "c" * 64, "rejected", None)
    assert lin.registry.alias("champion") == "b" * 64 and lin.registry.alias("candidate") is None
    assert lin.registry.model("c" * 64)["status"] == "rejected"
