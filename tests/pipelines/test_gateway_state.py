"""What several gateway replicas share through the lineage root: the live split, promotions, and
the ledger row that records an operator's decision."""

from __future__ import annotations

import pytest

from evo.inference.gateway import Gateway, GatewaySettings
from evo.lineage.ledger import Ledger
from evo.lineage.registry import Registry
from evo.openai_api import APIError


@pytest.fixture
def root(tmp_path):
    reg = Registry(tmp_path)
    reg.add("a" * 64, "gen-0", "", "base")
    reg.add("b" * 64, "gen-1", "a" * 64, "candidate")
    reg.move("champion", "a" * 64)
    reg.move("candidate", "b" * 64)
    Ledger(tmp_path).append({"GEN_ID": "gen-1", "parent_sha": "a" * 64, "child_sha": "b" * 64,
                             "decision": "promoted", "reason": "passed the gate"})
    return tmp_path


def replicas(root, n=2, share=0.5):
    return [Gateway(GatewaySettings(str(root), share, "tok", state_id="app-1")) for _ in range(n)]


def test_a_split_set_on_one_replica_reaches_the_others(root):
    one, two = replicas(root)
    one.set_split({"candidate_share": 0.0})
    assert two.router.candidate_share == 0.5  # not yet followed
    two.sync_split()
    assert two.router.candidate_share == 0.0
    assert {two.resolve("evo", f"user-{i}").arm for i in range(20)} == {"champion"}
    late = replicas(root, 1, share=0.9)[0]  # a replica restarted later keeps the live split, not its start value
    assert late.router.candidate_share == 0.0


def test_a_promotion_on_one_replica_is_seen_by_the_others(root):
    one, two = replicas(root)
    assert not two.registry_changed()
    one.apply(one.promote())
    assert two.registry_changed()
    two.apply(two.read_registry())
    assert not two.registry_changed() and two.aliases == {"champion": "b" * 64, "candidate": None}


def test_admin_promote_and_reject_are_written_to_the_ledger(root):
    gw = replicas(root, 1)[0]
    gw.apply(gw.reject())
    row = Ledger(root).get("gen-1")
    assert row["decision"] == "rejected" and "admin: rejected over HTTP" in row["reason"]
    assert row["ab_result"].startswith("admin: rejected over HTTP at ")
    assert Registry(root).model("b" * 64)["status"] == "rejected"
    with pytest.raises(APIError) as e:
        gw.promote()
    assert e.value.status == 409  # nothing left to promote


def test_admin_revert_names_the_generation_to_restore(root):
    gw = replicas(root, 1)[0]
    gw.apply(gw.promote())
    with pytest.raises(APIError) as e:
        gw.revert({})
    assert e.value.status == 400 and "/admin/reject" in str(e.value)
    with pytest.raises(APIError) as e:
        gw.revert({"to": "gen-7"})
    assert e.value.status == 409 and "no model of generation 'gen-7'" in str(e.value)
    assert gw.revert({"to": "gen-0"})["aliases"]["champion"] == "a" * 64
    row = Ledger(root).get("gen-1")
    assert (row["decision"], row["restored"]) == ("reverted", "gen-0")


def test_a_second_vote_on_a_pair_is_refused_and_not_counted(root):
    gw = replicas(root, 1)[0]
    pair_id, _ = gw.open_pair("prompt-1")
    gw.record_preference({"pair_id": pair_id, "preferred": "a"})
    with pytest.raises(APIError) as e:
        gw.record_preference({"pair_id": pair_id, "preferred": "b"})
    assert e.value.status == 409 and "first one stands" in str(e.value)
    assert gw.stats()["pairwise"]["distinct_prompts"] == 1
    assert sum(ev["kind"] == "pairwise" for ev in gw.feedback.read().events) == 1  # never written


def test_an_ft_name_resolves_without_reading_every_job_file_per_request(root, monkeypatch):
    """Resolving `ft:` names (and listing models) reads the job files once, then only after the jobs
    folder changes: 50 requests on a quiet folder read none; a job written since is found at once."""
    import os
    import time

    from evo.atomic import atomic_write_json
    from evo.finetune.jobs import JobStore

    store = JobStore(root)
    store.dir.mkdir(parents=True, exist_ok=True)

    def job(i: int, sha: str) -> str:
        name = f"ft:gen-1:evo:job{i}"
        atomic_write_json(store.dir / f"ftjob-{i}.json", {"id": f"ftjob-{i}", "created_ns": i, "owner": "",
                                                          "fine_tuned_model": name, "evo": {"sha": sha}})
        return name

    first = job(1, "b" * 64)
    old = time.time() - 60
    os.utime(store.dir, (old, old))  # written a minute ago
    gw = replicas(root, 1)[0]
    reads = []
    real_all = JobStore.all
    monkeypatch.setattr(JobStore, "all", lambda self: reads.append(1) or real_all(self))
    for _ in range(50):
        assert gw.resolve(first, None).sha == "b" * 64
        gw.model_list()
    assert len(reads) == 1
    second = job(2, "a" * 64)  # a job finished since: the folder's mtime moved
    assert gw.resolve(second, None).sha == "a" * 64 and len(reads) == 2
    with pytest.raises(APIError):
        gw.resolve("ft:gen-1:evo:nope", None)
