"""The driver decides against the champion at the moment its decision applies (issue 26, item 1).

Real Ray evals and real decisions on a copy of the session's roots; no model is trained: the two
generations are the session's own (`two_generations_root`), their models copied in by sha.
"""

from __future__ import annotations

import json
import shutil

import pytest

from evo.driver import run_generation
from evo.lineage.root import Lineage
from evo.progress import Silent
from tests.helpers import LOOSE_GATE, copy_root, tiny_config

pytestmark = pytest.mark.integration


class RevertWhileEvaluating(Silent):
    """Another process's decision landing while the driver evaluates: an operator reverts to `to`
    (through a Lineage of its own) the first time the driver says it is evaluating."""

    def __init__(self, root, to: str):
        super().__init__()
        self.root, self.to, self.messages, self.done = root, to, [], False

    def __call__(self, where: str, message: str) -> None:
        self.messages.append(message)
        if message.startswith("evaluating child") and not self.done:
            self.done = True
            Lineage(self.root).decisions.revert(self.to, "an operator, while gen-2 was being evaluated")


def gen2_resumed(base_root, two_generations_root, tmp_path):
    """A root where gen-1 (the session's) is champion and gen-2 (the session's, trained from gen-1)
    is proposed, as a driver that died after training leaves it: (lineage, gen-1 row, gen-2 row, base sha)."""
    done = Lineage(two_generations_root)
    g1, g2 = done.ledger.get("gen-1"), done.ledger.get("gen-2")
    root = copy_root(base_root, tmp_path)
    for sha in (g1["child_sha"], g2["child_sha"]):
        shutil.copytree(done.models.path(sha), Lineage(root).models.path(sha))
    shutil.copy2(done.data.path(g1["data_delta_sha"]), Lineage(root).data.path(g1["data_delta_sha"]))
    lin = Lineage(root)
    base = lin.registry.alias("champion")
    lin.registry.add(g1["child_sha"], "gen-1", base, "candidate")
    lin.decisions.propose("gen-1", g1["child_sha"], "trained (the session's gen-1)")
    lin.decisions.record(g1, g1["child_sha"], "promoted")  # gen-1 is the champion
    lin.registry.add(g2["child_sha"], "gen-2", g1["child_sha"], "candidate")
    lin.decisions.propose("gen-2", g2["child_sha"], "trained before the driver died")  # resumed, not retrained
    return lin, g1, g2, base


def test_a_child_is_scored_again_when_the_champion_moves_before_its_decision(base_root, two_generations_root,
                                                                            demo_dir, tmp_path):
    """gen-2 is trained from gen-1 while gen-1 is champion, and evaluated against it; meanwhile the
    champion goes back to gen-0. Its promotion over gen-1 must not apply: it is scored again against
    gen-0 (recall over gen-0's line, generalization on its own test part) and decided on that."""
    lin, g1, g2, base = gen2_resumed(base_root, two_generations_root, tmp_path)
    root = lin.root
    cfg = tiny_config(demo_dir, *LOOSE_GATE)
    progress = RevertWhileEvaluating(root, "gen-0")
    row = run_generation(cfg, lin, 2, cfg.data.generations[1], progress)

    assert any("the champion is now gen-0" in m for m in progress.messages), progress.messages
    assert (row["parent_sha"], row["compared_with"]) == (g1["child_sha"], base)
    assert row["decision"] == "promoted" and "compared with the champion gen-0, not its parent gen-1" in row["reason"]
    assert lin.ledger.get("gen-2")["compared_with"] == base
    assert lin.registry.alias("champion") == g2["child_sha"]  # promoted over the champion it was compared with
    report = json.loads(lin.eval_path("gen-2").read_text())
    assert report["compared_with"] == base
    assert set(report["child"]["recall_by_gen"]) == {"gen-0"}  # gen-0's line, not gen-1's
    assert [d.op for d in lin.decisions.log()][-3:] == ["propose", "revert", "record"]
    assert lin.ledger.get("gen-1")["decision"] == "reverted"


class MoveEveryTime(Silent):
    """The champion moves every time the driver evaluates: back to gen-0, then gen-1 again, and so on."""

    def __init__(self, root):
        super().__init__()
        self.root, self.messages, self.moves = root, [], 0

    def __call__(self, where: str, message: str) -> None:
        self.messages.append(message)
        if message.startswith("evaluating child"):
            decisions = Lineage(self.root).decisions
            decisions.revert("gen-0", "an operator") if self.moves % 2 == 0 else decisions.promote("gen-1", "an operator")
            self.moves += 1


def test_a_child_the_champion_keeps_moving_away_from_is_rejected_saying_so(base_root, two_generations_root,
                                                                          demo_dir, tmp_path, monkeypatch):
    """Scored again only so often (RESCORES, here 1: two evaluations): a child whose champion moved
    before each of its decisions was written is recorded rejected, with the reason, and the champion
    is the one the operator left, not the child."""
    import evo.driver

    monkeypatch.setattr(evo.driver, "RESCORES", 1)
    lin, g1, g2, base = gen2_resumed(base_root, two_generations_root, tmp_path)
    progress = MoveEveryTime(lin.root)
    cfg = tiny_config(demo_dir, *LOOSE_GATE)
    row = run_generation(cfg, lin, 2, cfg.data.generations[1], progress)
    assert progress.moves == 2
    assert row["decision"] == "rejected" and "the champion moved 2 times" in row["reason"], row["reason"]
    assert "last compared with gen-0" in row["reason"]
    assert lin.ledger.get("gen-2")["decision"] == "rejected"
    assert lin.registry.alias("champion") == g1["child_sha"]  # the operator's promote stands
    assert lin.registry.model(g2["child_sha"])["status"] == "rejected"
