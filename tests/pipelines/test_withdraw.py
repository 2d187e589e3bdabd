"""A fine-tuning job that fails or is cancelled leaves no model behind (issue 27, item 4): its child is
withdrawn through the decisions module, the champion and the candidate go back to what they were
before the job, the model is never served, and the job's last event is its real end. On real files:
the registry, the ledger, the decision log, the job store and the job runner (`run_job.execute`); the
training itself is stood in by what the driver's `run_generation` does to the lineage, step by step
(register the child, propose it, record the gate's verdict), so each stage can be failed in turn."""

from __future__ import annotations

import pytest

from evo.atomic import atomic_write_json, read_json
from evo.config import EvoConfig
from evo.finetune.files import FileStore
from evo.finetune.jobs import JobStore
from evo.finetune.run_job import execute
from evo.inference.gateway import Gateway, GatewaySettings
from evo.lineage.decisions import DecisionError, Decisions
from evo.lineage.ledger import Ledger
from evo.lineage.registry import Registry
from evo.openai_api import APIError

BASE, HELD, CHILD = "a" * 64, "b" * 64, "c" * 64
GOOD = b'{"prompt": "a", "completion": "b"}\n{"text": "c d"}\n'


@pytest.fixture
def root(tmp_path):
    """gen-0 champion, and gen-1 an A/B round's candidate held undecided (pending)."""
    reg, ledger = Registry(tmp_path), Ledger(tmp_path)
    reg.add(BASE, "gen-0", "", "base")
    ledger.append({"GEN_ID": "gen-0", "child_sha": BASE, "decision": "promoted", "reason": "base"})
    reg.move("champion", BASE)
    reg.add(HELD, "gen-1", BASE, "candidate")
    ledger.append({"GEN_ID": "gen-1", "parent_sha": BASE, "child_sha": HELD, "decision": "pending",
                   "reason": "an A/B round ended undecided"})
    reg.move("candidate", HELD)
    return tmp_path


def row(gid, child, parent, decision="promoted"):
    return {"GEN_ID": gid, "parent_sha": parent, "child_sha": child, "decision": decision, "reason": "passed the gate"}


def trained(root, gid="gen-2"):
    Registry(root).add(CHILD, gid, BASE, "candidate")
    Decisions(root).propose(gid, CHILD, "trained")


def test_a_child_withdrawn_before_its_verdict_leaves_the_registry_and_the_candidate_returns(root):
    before = read_json(root / "registry.json")
    trained(root)
    assert Registry(root).alias("candidate") == CHILD
    d = Decisions(root).withdraw("gen-2", "fine-tuning job ftjob-x failed")
    after = read_json(root / "registry.json")
    assert after["aliases"] == before["aliases"] == {"champion": BASE, "candidate": HELD}
    assert after["models"] == before["models"] and Ledger(root).get("gen-2") is None
    assert d.op == "withdraw" and read_json(d.path)["applied"]
    assert Decisions(root).withdraw("gen-2", "again") is None  # nothing left to withdraw
    Decisions(root)._apply(d)  # its effects applied again change nothing
    assert read_json(root / "registry.json")["aliases"] == before["aliases"]


def test_a_champion_withdrawn_after_its_verdict_gives_the_champion_back_and_is_never_served(root):
    trained(root)
    Decisions(root).record(row("gen-2", CHILD, BASE), CHILD, "promoted")
    reg = Registry(root)
    assert reg.alias("champion") == CHILD
    gw = Gateway(GatewaySettings(str(root)))
    assert gw.resolve("gen-2", None).sha == CHILD
    Decisions(root).withdraw("gen-2", "fine-tuning job ftjob-x cancelled after the gate's verdict")
    assert reg.alias("champion") == BASE and reg.model(CHILD)["status"] == "withdrawn"
    r = Ledger(root).get("gen-2")
    assert r["decision"] == "withdrawn" and "cancelled after the gate's verdict" in r["reason"]
    assert "the gate had it promoted: passed the gate" in r["reason"]  # the gate's verdict stays on record
    gw.reload()
    for name in ("gen-2", CHILD[:12]):
        with pytest.raises(APIError) as e:
            gw.resolve(name, None)
        assert e.value.status == 404
    assert gw.resolve("champion", None).sha == BASE
    assert CHILD not in [m.get("sha") for m in gw.model_list()["data"]]
    assert Decisions(root).withdraw("gen-2", "again") is None


def test_a_child_another_generation_was_promoted_on_cannot_be_withdrawn(root):
    trained(root)
    Decisions(root).record(row("gen-2", CHILD, BASE), CHILD, "promoted")
    reg = Registry(root)
    reg.add("d" * 64, "gen-3", CHILD, "candidate")
    Decisions(root).record(row("gen-3", "d" * 64, CHILD), "d" * 64, "promoted")
    with pytest.raises(DecisionError, match="on the champion's line"):
        Decisions(root).withdraw("gen-2", "late cancel")
    assert reg.alias("champion") == "d" * 64 and reg.model(CHILD)["status"] == "promoted"


# ---------------------------------------------------------------- a job failed at each stage

class StandIn:
    """What `evo.driver.run_generation` does to the lineage, the training stood in: `fail` names the
    stage that raises; "after_verdict" records the verdict, then a cancel lands before the runner's end."""

    def __init__(self, root, jid, fail):
        self.root, self.jid, self.fail = root, jid, fail

    def __call__(self, cfg, lin, index, path, progress, extra=None, tune=False, parent=None, own_val=None):
        gid = f"gen-{index}"
        if self.fail == "before_training":
            raise ValueError(f"{gid}: the delta has 2 records, too few to split into train, val and test")
        if self.fail == "during_training":
            raise RuntimeError("injected: a Ray Train worker died")
        atomic_write_json(lin.models.path(CHILD) / "meta.json", {"tokens": 12})
        lin.registry.add(CHILD, gid, parent, "candidate")
        lin.decisions.propose(gid, CHILD, "trained")
        if self.fail == "after_training":
            raise RuntimeError("injected: the evals failed")
        r = row(gid, CHILD, parent)
        lin.decisions.record(r, CHILD, "promoted")
        JobStore(self.root).update(self.jid, status="cancelled")  # the cancel, landing after the verdict
        return r


@pytest.mark.parametrize("stage,status", [("before_training", "failed"), ("during_training", "failed"),
                                          ("after_training", "failed"), ("after_verdict", "cancelled")])
def test_a_job_that_fails_or_is_cancelled_at_any_stage_leaves_no_model(root, stage, status):
    atomic_write_json(root / "run_config.json", EvoConfig(data={"base": "b.jsonl"}).model_dump(mode="json"))
    files, jobs = FileStore(root), JobStore(root)
    fid = files.create(GOOD, "t.jsonl", "fine-tune", "")["id"]
    job = jobs.create({"model": "gen-0", "training_file": fid}, "", None, files, lambda name: ("gen-0", BASE))
    before = read_json(root / "registry.json")
    execute(root, job["id"], StandIn(root, job["id"], stage))
    job = jobs.raw(job["id"])
    assert job["status"] == status and job["fine_tuned_model"] is None and job["evo"]["sha"] is None
    after = read_json(root / "registry.json")
    assert after["aliases"] == before["aliases"] == {"champion": BASE, "candidate": HELD}
    assert after["models"].get(CHILD, {"status": "withdrawn"})["status"] == "withdrawn"
    messages = [e["message"] for e in reversed(jobs.events(job["id"], limit=100)["data"])]
    assert messages[-1].startswith(status) and not any(m.startswith("succeeded") for m in messages)
    if stage in ("after_training", "after_verdict"):  # a model was registered: the withdraw is on record
        assert [d.op for d in Decisions(root).log()][-1] == "withdraw"
        assert any("its model was withdrawn" in m for m in messages)
    with pytest.raises(APIError):
        Gateway(GatewaySettings(str(root))).resolve(CHILD[:12], None)
