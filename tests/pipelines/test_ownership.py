"""Tenant branches (issue 27, item 1): every model has an owner, the shared line ("") or a tenant's key
id, and the registry, the ledger, the decisions and the gateway all read it. A tenant's generation
never moves a shared alias, is seen and served only by its tenant and admin, joins the shared line
only by an admin's promotion gated against the champion, and its replay reaches only the shared
line's data and its own. Real registry, ledger, decision log, data and model stores on files."""

from __future__ import annotations

import pytest

from evo.atomic import atomic_write_json
from evo.data.records import Record
from evo.inference.gateway import Gateway, GatewaySettings
from evo.lineage.decisions import ChampionMoved, DecisionError, Decisions
from evo.lineage.ledger import Ledger
from evo.lineage.registry import Registry, RegistryError, visible
from evo.lineage.root import Lineage
from evo.openai_api import APIError

BASE, ALICE, BOB, NEXT = "a" * 64, "c" * 64, "d" * 64, "e" * 64


@pytest.fixture
def root(tmp_path):
    reg = Registry(tmp_path)
    reg.add(BASE, "gen-0", "", "base")
    Decisions(tmp_path).record({"GEN_ID": "gen-0", "child_sha": BASE, "decision": "promoted", "reason": "base"},
                               BASE, "base")
    return tmp_path


def job_generation(root, gid, sha, parent, owner, decision="promoted", compared=None):
    """What the driver does for a fine-tuning job's generation: register the child on the job's branch,
    propose it, record the gate's verdict (compared with its parent, or `compared`)."""
    Registry(root).add(sha, gid, parent, "candidate", owner=owner)
    Decisions(root).propose(gid, sha, "trained")
    row = {"GEN_ID": gid, "parent_sha": parent, "child_sha": sha, "decision": decision, "reason": "the gate",
           "compared_with": compared or parent}
    Decisions(root).record(row, sha, decision)


def test_who_sees_what():
    shared, alices = {"owner": ""}, {"owner": "key-alice"}
    assert visible(shared, "key-bob") and visible(alices, "key-alice") and visible(alices, None)
    assert not visible(alices, "key-bob") and not visible(alices, "")  # "": a shared-line job sees only the shared line
    assert visible({}, "key-bob")  # an entry of an older root: the shared line's


def test_a_tenants_generation_never_moves_a_shared_alias(root):
    job_generation(root, "gen-1", ALICE, BASE, "key-alice")
    reg = Registry(root)
    assert reg.load()["aliases"] == {"champion": BASE, "candidate": None}
    assert reg.model(ALICE)["owner"] == "key-alice" and reg.model(ALICE)["status"] == "promoted"
    assert Ledger(root).get("gen-1")["owner"] == "key-alice"
    # a stop on a tenant's branch sets its child aside and leaves the shared champion where it is
    Registry(root).add(BOB, "gen-2", BASE, "candidate", owner="key-bob")
    Decisions(root).stop({"GEN_ID": "gen-2", "parent_sha": BASE, "child_sha": BOB, "decision": "stopped",
                          "reason": "the stop rule fired"}, BOB, restore="gen-0")
    assert reg.alias("champion") == BASE and reg.model(BOB)["status"] == "stopped"
    with pytest.raises(DecisionError, match="branch"):
        Decisions(root).stage_ab("gen-1")  # never shown to everyone as an A/B candidate
    with pytest.raises(RegistryError, match="another tenant's"):
        reg.add(NEXT, "gen-3", ALICE, "candidate", owner="key-bob")


def test_a_tenants_model_is_served_to_it_and_admin_only(root):
    job_generation(root, "gen-1", ALICE, BASE, "key-alice")
    atomic_write_json(root / "service" / "jobs" / "ftjob-a1.json",
                      {"id": "ftjob-a1", "owner": "key-alice", "fine_tuned_model": "ft:gen-0:shop:cccccccc",
                       "finished_at": 1, "created_ns": 1, "evo": {"sha": ALICE, "gen_id": "gen-1"}})
    gw = Gateway(GatewaySettings(str(root)))
    for name in ("evo", "champion"):  # every tenant's aliases are the shared line's
        assert gw.resolve(name, "u", "key-bob").sha == BASE and gw.resolve(name, "u", "key-alice").sha == BASE
    for name in ("gen-1", ALICE[:12], "ft:gen-0:shop:cccccccc"):
        with pytest.raises(APIError) as e:
            gw.resolve(name, None, "key-bob")
        assert e.value.status == 404
        assert gw.resolve(name, None, "key-alice").sha == ALICE and gw.resolve(name, None, None).sha == ALICE
    listed = {who: {m.get("sha") for m in gw.model_list(who)["data"]} for who in ("key-bob", "key-alice", None)}
    assert ALICE not in listed["key-bob"] and ALICE in listed["key-alice"] and ALICE in listed[None]
    assert [r["GEN_ID"] for r in gw.lineage("key-bob")["generations"]] == ["gen-0"]


def test_a_tenant_deletes_its_own_fine_tuned_model_and_nobody_elses(root):
    """DELETE /v1/models/{id} (OpenAI's models.delete): another tenant's model is a 404 for bob; alice's
    own is withdrawn (no longer listed or served, the ledger row says so); the champion, or a
    generation no job made, is refused."""
    job_generation(root, "gen-1", ALICE, BASE, "key-alice")
    name = "ft:gen-0:shop:cccccccc"
    atomic_write_json(root / "service" / "jobs" / "ftjob-a1.json",
                      {"id": "ftjob-a1", "owner": "key-alice", "fine_tuned_model": name,
                       "finished_at": 1, "created_ns": 1, "evo": {"sha": ALICE, "gen_id": "gen-1"}})
    gw = Gateway(GatewaySettings(str(root)))
    for who, model, status in (("key-bob", name, 404), ("key-alice", "champion", 404), ("key-alice", "gen-0", 404),
                               (None, "gen-0", 400), (None, "champion", 400)):
        with pytest.raises(APIError) as e:
            gw.delete_model(model, who)
        assert e.value.status == status, (who, model, e.value.message)
    assert gw.delete_model("gen-1", "key-alice") == {"id": "gen-1", "object": "model", "deleted": True}  # by gen id
    for who in ("key-alice", None):
        assert name not in {m["id"] for m in gw.model_list(who)["data"]}
        with pytest.raises(APIError) as e:
            gw.resolve(name, None, who)
        assert e.value.status == 404
    assert Ledger(root).get("gen-1")["decision"] == "withdrawn"
    assert Registry(root).alias("champion") == BASE
    with pytest.raises(APIError) as e:  # deleted already: not there
        gw.delete_model(name, "key-alice")
    assert e.value.status == 404


def test_a_model_on_the_shared_line_is_deleted_by_no_tenant_and_a_live_one_by_nobody(root):
    """A tenant sees the shared line's fine-tuned models but deletes none of them (404), even its own
    once an admin promoted it onto the shared line; and a replica that has not followed that promotion
    yet still refuses to withdraw the champion (409): the decision reads the aliases of its moment."""
    job_generation(root, "gen-1", ALICE, BASE, "key-alice")
    atomic_write_json(root / "service" / "jobs" / "ftjob-a1.json",
                      {"id": "ftjob-a1", "owner": "key-alice", "fine_tuned_model": "ft:gen-0:a:cccccccc",
                       "finished_at": 1, "created_ns": 1, "evo": {"sha": ALICE, "gen_id": "gen-1"}})
    stale = Gateway(GatewaySettings(str(root)))
    Decisions(root).promote("gen-1", "admin: onto the shared line")
    assert Registry(root).alias("champion") == ALICE
    with pytest.raises(APIError) as e:
        Gateway(GatewaySettings(str(root))).delete_model("ft:gen-0:a:cccccccc", "key-alice")
    assert e.value.status == 404  # the shared line's now: not alice's to delete
    for gw in (stale, Gateway(GatewaySettings(str(root)))):
        with pytest.raises(APIError) as e:
            gw.delete_model("ft:gen-0:a:cccccccc", None)
        assert e.value.status == 409 and "champion" in e.value.message
    assert Registry(root).alias("champion") == ALICE and Registry(root).model(ALICE)["status"] != "withdrawn"


def test_a_tenants_model_joins_the_shared_line_only_by_a_gated_admin_promotion(root):
    job_generation(root, "gen-1", BOB, BASE, "key-bob", decision="rejected")
    with pytest.raises(DecisionError, match="only once the gate passed it"):
        Decisions(root).promote("gen-1", "admin")
    job_generation(root, "gen-2", ALICE, BASE, "key-alice")
    job_generation(root, "gen-3", NEXT, ALICE, "key-alice")  # alice's branch goes on from her own model
    # the champion is still the model gen-2 was gated against: the promotion applies, and gen-2 joins the shared line
    Decisions(root).promote("gen-2", "admin: promoted gen-2 over HTTP")
    reg = Registry(root)
    assert reg.alias("champion") == ALICE and reg.model(ALICE)["owner"] == ""
    assert Ledger(root).get("gen-2")["owner"] == "" and reg.model(NEXT)["owner"] == "key-alice"
    # gen-3 was gated against gen-2 on alice's branch, which is the champion now: it may follow, its line with it
    Decisions(root).promote("gen-3", "admin")
    assert reg.alias("champion") == NEXT and reg.model(NEXT)["owner"] == ""


def test_a_promotion_of_a_tenants_model_is_a_compare_and_swap(root):
    job_generation(root, "gen-1", ALICE, BASE, "key-alice")
    job_generation(root, "gen-2", BOB, BASE, "")  # meanwhile the shared line moved on
    assert Registry(root).alias("champion") == BOB
    with pytest.raises(ChampionMoved, match="must be scored against gen-2"):
        Decisions(root).promote("gen-1", "admin")
    assert Registry(root).alias("champion") == BOB and Registry(root).model(ALICE)["owner"] == "key-alice"


def test_a_jobs_replay_reaches_the_shared_line_and_its_own_branch_only(root):
    """Replay is over the parent's ancestors (`Lineage.ancestry`): a tenant's job from the champion replays
    the shared line's data; from its own model, its own uploads too; never another tenant's."""
    lin = Lineage(root)
    deltas = {who: lin.data.put([Record("completion", prompt=f"{who} question {i}", completion=f" {who} answer {i}")
                                 for i in range(40)]) for who in ("shared", "bob", "alice")}
    ledger = Ledger(root)
    ledger.update("gen-0", data_delta_sha=deltas["shared"])
    for sha, parent in ((BASE, ""), (BOB, BASE), (ALICE, BASE)):
        atomic_write_json(lin.models.path(sha) / "meta.json", {"parent_sha": parent})
    job_generation(root, "gen-1", BOB, BASE, "key-bob")
    ledger.update("gen-1", data_delta_sha=deltas["bob"])
    job_generation(root, "gen-2", ALICE, BASE, "key-alice")
    ledger.update("gen-2", data_delta_sha=deltas["alice"])

    def replayed(parent):
        return {r.prompt.split()[0] for r in lin.ancestry(parent, 0.1, 0.1).pool}
    assert replayed(Registry(root).alias("champion")) == {"shared"}  # alice's next job from champion
    assert replayed(ALICE) == {"shared", "alice"}  # from her own model
    assert "bob" not in replayed(ALICE) | replayed(BASE)


def test_admin_promote_over_http_names_the_generation(root):
    """POST /admin/promote {"gen"}: the gateway's promote takes the generation to promote (no body: the candidate)."""
    job_generation(root, "gen-1", ALICE, BASE, "key-alice")
    gw = Gateway(GatewaySettings(str(root)))
    for bad in ({"gen": 3}, "gen-1"):
        with pytest.raises(APIError) as e:
            gw.promote(bad)
        assert e.value.status == 400
    with pytest.raises(APIError) as e:
        gw.promote({})  # the candidate: there is none (a tenant's child never is one)
    assert e.value.status == 409
    assert gw.apply(gw.promote({"gen": "gen-1"}))["champion"] == ALICE
    assert gw.resolve("champion", None, "key-bob").sha == ALICE and gw.resolve("gen-1", None, "key-bob").sha == ALICE
