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


def test_a_child_is_scored_again_when_the_champion_moves_before_its_decision(base_root, two_generations_root,
                                                                            demo_dir, tmp_path):
    """gen-2 is trained from gen-1 while gen-1 is champion, and evaluated against it; meanwhile the
    champion goes back to gen-0. Its promotion over gen-1 must not apply: it is scored again against
    gen-0 (recall over gen-0's line, generalization on its own test part) and decided on that."""
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
