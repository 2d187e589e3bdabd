"""evo.tracking without Ray: the decisions module moves MLflow's registry aliases right after evo's
registry (embedded store, a root of registry entries and ledger rows with stand-in models), and a
sync after that changes nothing."""

from __future__ import annotations

import time

import pytest

from evo.atomic import atomic_write_json
from evo.config import ConfigError, TrackingConfig, load_config
from evo.lineage.decisions import Decisions
from evo.tracking import files, live
from tests.helpers.tracking import client, dump


def model(root, sha: str, gid: str) -> None:
    atomic_write_json(root / "models" / sha / "meta.json", {"gen_id": gid, "steps": 5, "lr": 0.01,
                                                             "config": {"train": {"seed": 3}}})


def row(gid: str, parent: str, child: str, decision: str) -> dict:
    return {"GEN_ID": gid, "parent_sha": parent, "child_sha": child, "decision": decision, "reason": f"{gid} why",
            "steps": 5, "lr": 0.01, "replay_k": 0, "data_delta_sha": "d" * 8}


def aliases(target: dict) -> dict:
    return dump(target)["aliases"]


def test_the_aliases_follow_evos_registry(tmp_path):
    root = tmp_path / "lineage"
    target = files.target_of(TrackingConfig(), "t", root)
    files.write_target(root, target)
    target = files.read_target(root)
    d = Decisions(root)
    a, b = "a" * 64, "b" * 64
    model(root, a, "gen-0")
    d.registry.add(a, "gen-0", "", "base")
    d.record(row("gen-0", "", a, "promoted"), a, "base")
    assert aliases(target) == {"champion": 1}
    model(root, b, "gen-1")
    d.registry.add(b, "gen-1", a, "candidate")
    d.propose("gen-1", b, "trained")
    assert aliases(target) == {"champion": 1}  # a fresh child is no registered version yet
    d.record({**row("gen-1", a, b, "promoted"), "compared_with": a}, b, "promoted")
    view = dump(target)
    assert view["aliases"] == {"champion": 2}
    assert view["versions"][2][:2] == (b, "gen-1") and view["runs"][("gen-1", "")]["tags"]["evo.decision"] == "promoted"
    d.stage_ab("gen-1")  # an A/B round: the parent serves as champion, the child as candidate
    assert aliases(target) == {"champion": 1, "candidate": 2}
    d.promote("gen-1", "A/B: better", ab_result="better: 9 / 1", compared_with=a)
    view = dump(target)
    assert view["aliases"] == {"champion": 2} and view["runs"][("gen-1", "")]["tags"]["evo.ab_result"] == "better: 9 / 1"
    d.revert("gen-0")
    view = dump(target)
    assert view["aliases"] == {"champion": 1} and view["versions"][2][3:] == ("reverted", "reverted")
    assert view["runs"][("gen-1", "")]["tags"]["evo.decision"] == "reverted"
    c = client(target)
    assert c.get_model_version_by_alias(target["model_name"], "champion").tags["evo.sha"] == a
    before = dump(target)
    live.cmd_sync(str(root), "sync", None)
    after = dump(target)
    # the sync completed the runs (params, final metrics, finished); it moved no alias and made no version
    assert after["aliases"] == before["aliases"] and after["versions"] == before["versions"]
    assert after["runs"][("gen-1", "")]["params"]["seed"] == "3"
    live.cmd_sync(str(root), "sync", None)
    assert dump(target) == after


def test_the_tracking_section_is_checked():
    with pytest.raises(ConfigError, match="tracking.*uri: required when backend is mlflow"):
        load_config(None, ["data.base=x.jsonl", "tracking.backend=mlflow"])
    with pytest.raises(ConfigError, match="only for backend mlflow"):
        load_config(None, ["data.base=x.jsonl", "tracking.uri=http://127.0.0.1:5000"])
    assert load_config(None, ["data.base=x.jsonl", "tracking.backend=off"]).tracking.backend == "off"


def test_sync_names_a_server_that_does_not_answer(tmp_path):
    from evo.tracking.view import TrackingUnavailable
    from tests.helpers.tracking import free_port

    root = tmp_path / "lineage"
    Decisions(root).ledger.append(row("gen-0", "", "a" * 64, "promoted"))
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(TrackingUnavailable, match=rf"{uri}: the sync: .*Connection refused"):
        live.cmd_sync(str(root), "sync", uri)
    assert time.perf_counter() - t0 < 30  # one try, no minutes of MLflow's retries
    assert files.read_target(root)["uri"] == uri  # kept: the next sync sends it there
