"""evo.tracking without Ray: the decisions module moves MLflow's registry aliases right after evo's
registry (embedded store, a root of registry entries and ledger rows with stand-in models), and a
sync after that changes nothing; a fine-tuning job's run carries its job id and tenant, an A/B
round's counts and verdict land on the candidate's run, the workers' step reports are sent while
the generation runs, and a sync from nothing rebuilds the same view; one experiment per root."""

from __future__ import annotations

import json
import shutil
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


def base(root, sha: str) -> Decisions:
    d = Decisions(root)
    model(root, sha, "gen-0")
    d.registry.add(sha, "gen-0", "", "base")
    d.record(row("gen-0", "", sha, "promoted"), sha, "base")
    return d


def poll(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (out := fn()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return out


def test_a_jobs_run_an_ab_round_and_live_steps_and_a_sync_from_nothing_shows_the_same(tmp_path):
    from evo.finetune.files import FileStore
    from evo.finetune.jobs import JobStore

    root = tmp_path / "lineage"
    cfg = load_config(None, ["data.base=x.jsonl"])  # tracking: the embedded default
    a, b = "a" * 64, "b" * 64
    track = live.start(cfg, root, "gen-0")
    d = base(root, a)
    track.finish(d.ledger.get("gen-0"))
    target = files.read_target(root)
    # what the end of `evo run` prints (evo.driver): the command that shows this very store
    assert live.where(root) == f"mlflow ui --backend-store-uri sqlite:///{root / 'tracking' / 'mlflow.db'}"
    assert target["uri"] == f"sqlite:///{root / 'tracking' / 'mlflow.db'}"
    # gen-1 is a fine-tuning job of tenant key-alice, made and started as evo.finetune.run_job does
    train = b"".join(json.dumps({"prompt": f"q{i} =", "completion": f" a{i}"}).encode() + b"\n" for i in range(8))
    fid = FileStore(root).create(train, "t.jsonl", "fine-tune", "key-alice")["id"]
    jobs = JobStore(root)
    job = jobs.create({"model": "champion", "training_file": fid}, "key-alice", "key-alice", FileStore(root),
                      lambda m: ("gen-0", a))
    jobs.update(job["id"], status="running", evo={**job["evo"], "gen_id": "gen-1"})
    track = live.start(cfg, root, "gen-1")
    for step, loss in ((5, 2.5), (10, 1.5)):  # rank 0's checkpoint reports (evo.train.loop)
        files.note_report(str(root), "gen-1", {"step": step, "train_loss": loss + 0.1, "val_loss": loss})
    c = client(target)
    assert track.opened.wait(30)  # the tracker's thread made gen-1's run (start does not wait for it)
    run1 = track.view.run_id("gen-1")
    sent = poll(lambda: len(c.get_metric_history(run1, "val_loss")) == 2)
    assert sent, "the workers' reports were not sent while the generation ran"  # by the driver's thread, not finish
    model(root, b, "gen-1")
    d.registry.add(b, "gen-1", a, "candidate")
    d.propose("gen-1", b, "trained")
    d.record({**row("gen-1", a, b, "promoted"), "compared_with": a}, b, "promoted")
    track.finish(d.ledger.get("gen-1"))
    tags = dump(target)["runs"][("gen-1", "")]["tags"]
    assert (tags["evo.job_id"], tags["evo.tenant"]) == (job["id"], "key-alice")
    assert "evo.job_id" not in dump(target)["runs"][("gen-0", "")]["tags"]
    # two A/B rounds with gen-1 as candidate (evo.ab_round.finish_round calls after_ab_round)
    d.stage_ab("gen-1")
    for wins, verdict in ((3, "undecided"), (9, "better")):
        live.after_ab_round(root, "gen-1", verdict, {"candidate_wins": wins, "champion_wins": 1, "ties": 0,
                                                     "distinct_prompts": wins + 1})
    run = dump(target)["runs"][("gen-1", "")]
    assert run["metrics"]["ab/candidate_wins"] == [(1, 3.0), (2, 9.0)] and run["tags"]["evo.ab_verdict"] == "better"
    assert run["metrics"]["ab/distinct_prompts"] == [(1, 4.0), (2, 10.0)]
    assert dump(target)["runs"][("gen-0", "")]["metrics"].get("ab/candidate_wins") is None  # not the champion's run
    live.cmd_sync(str(root), "sync", None)
    tracked = dump(target)
    assert tracked["runs"][("gen-1", "")]["metrics"]["ab/candidate_wins"] == [(1, 3.0), (2, 9.0)]  # not twice
    # the same root with its MLflow view gone (a new store, no target): a sync from nothing rebuilds the same view
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("mlflow.db", "artifacts", "target.json"))
    live.cmd_sync(str(copy), "sync", None)
    assert dump(files.read_target(copy)) == tracked


def test_each_root_is_its_own_experiment_and_registered_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a sqlite tracking URI keeps run artifacts under ./mlruns
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    shas = {"one": "1" * 64, "two": "2" * 64}
    for name, sha in shas.items():
        base(tmp_path / name, sha)
        live.cmd_sync(str(tmp_path / name), "sync", uri)
    seen = {}
    for name, sha in shas.items():
        target = files.read_target(tmp_path / name)
        view = dump(target)  # only this root's experiment and registered model
        assert list(view["runs"]) == [("gen-0", "")] and view["runs"][("gen-0", "")]["tags"]["evo.child_sha"] == sha
        assert view["versions"] == {1: (sha, "gen-0", ("gen-0", ""), "base", "promoted")}
        seen[name] = (target["experiment"], target["model_name"])
    assert len(set(seen.values())) == 2 and len({e for e, _ in seen.values()}) == 2
