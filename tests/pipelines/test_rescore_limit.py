"""The driver's re-scoring when the champion keeps moving (issue 26, item 1), in the quick tier.

`decide_and_record` scores a child against the champion of the moment and writes the decision
through the real `Decisions`; when the champion moved before it was written (`ChampionMoved`, raised
by the real compare-and-swap), the child is scored again against the new champion, at most RESCORES
more times, and then recorded rejected, saying so. A real lineage root in a temp folder, models as
registry entries with made-up shas (as tests/lineage/test_champion_swap.py); the evals (Ray tasks)
and the gate are replaced by stand-ins that say which champion they were asked about.
"""

from __future__ import annotations

import evo.driver
from evo.config import EvoConfig
from evo.driver import RESCORES, decide_and_record
from evo.lineage.root import Lineage
from evo.progress import Silent


def sha(i: int) -> str:
    return f"{i:x}" * 64


class Scored:
    """What `evaluate` returns, as much of it as the driver reads."""

    scores = None

    def to_json(self) -> dict:
        return {"scores": {}}


class Spec:
    def gate_spec(self, cfg, lin, champion=None):
        return champion


def test_a_child_the_champion_moves_away_from_every_time_is_rejected_after_rescores(tmp_path, monkeypatch):
    """gen-2 is trained from gen-1 (the champion). Each time its decision is about to be written, an
    operator (another process: a Lineage of its own) moves the champion: back to gen-0, then gen-1
    again, and so on. The child is scored RESCORES + 1 times, each time against the champion of that
    moment; every promotion is refused by the compare-and-swap; then it is recorded rejected with the
    reason, and the champion is the one the operator left."""
    lin = Lineage(tmp_path)
    lin.registry.add(sha(1), "gen-0", "", "candidate")
    lin.decisions.record({"GEN_ID": "gen-0", "child_sha": sha(1), "decision": "promoted", "reason": "base"}, sha(1), "base")
    lin.registry.add(sha(2), "gen-1", sha(1), "candidate")
    lin.decisions.propose("gen-1", sha(2), "trained")
    lin.decisions.record({"GEN_ID": "gen-1", "parent_sha": sha(1), "child_sha": sha(2), "decision": "promoted",
                          "reason": "gate passed"},
                         sha(2), "promoted")
    lin.registry.add(sha(3), "gen-2", sha(2), "candidate")
    lin.decisions.propose("gen-2", sha(3), "trained")

    asked: list[str] = []  # the model each evaluation compared the child with

    def evaluate(cfg, lin_, gid, child, against, spec, progress):
        asked.append(against)
        return Scored()

    monkeypatch.setattr(evo.driver, "evaluate", evaluate)
    monkeypatch.setattr(evo.driver, "decide", lambda cfg, lin_, scores, against: ("promoted", "gate passed"))
    moves = []

    def row_of(ev, decision, reason, against):  # built just before the decision is written
        operator = Lineage(tmp_path).decisions
        operator.revert("gen-0", "an operator") if len(moves) % 2 == 0 else operator.promote("gen-1", "an operator")
        moves.append(lin.registry.alias("champion"))
        return {"GEN_ID": "gen-2", "parent_sha": sha(2), "child_sha": sha(3), "decision": decision, "reason": reason,
                "compared_with": against}

    row, _ = decide_and_record(EvoConfig(data={"base": "b.jsonl"}), lin, "gen-2", sha(3), sha(2), Spec(), Silent(),
                               row_of)

    assert RESCORES == 3 and len(asked) == RESCORES + 1 == len(moves)
    assert asked == [sha(2), sha(1), sha(2), sha(1)]  # each time the champion the last refusal named
    assert row["decision"] == "rejected"
    assert row["reason"] == ("not promoted: the champion moved 4 times before gen-2's decision was written; "
                             "it was last compared with gen-0")
    written = lin.ledger.get("gen-2")
    assert (written["decision"], written["reason"], written["compared_with"]) == ("rejected", row["reason"], sha(1))
    assert lin.registry.model(sha(3))["status"] == "rejected"
    assert lin.registry.alias("champion") == sha(2) == moves[-1]  # the operator's last move stands
    assert not lin.decisions.pending()
