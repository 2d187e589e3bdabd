"""The MLflow view of a lineage (evo.tracking): the session's two-generation run is tracked live in the
embedded store (tests/conftest.py turns tracking on for it); here it is read back with MlflowClient and
compared with the ledger, rebuilt by `evo tracking sync` (twice: nothing changes), sent to a real
`mlflow server`, and sent again after that server stopped in the middle of a generation (its tracking
calls replayed step by step, and a real generation run by the driver)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from evo.atomic import atomic_write_json, read_json
from evo.lineage.decisions import Decisions
from evo.lineage.ledger import Ledger
from evo.tracking import files, live
from tests.helpers import LOOSE_GATE, tiny_config
from tests.helpers.tracking import MlflowServer, client, dump

pytestmark = pytest.mark.integration


def fresh_copy(root: Path, dest: Path) -> Path:
    """The root copied without its MLflow view (its store, artifacts and target)."""
    copy = dest / "lineage"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("mlflow.db", "artifacts", "target.json", "pending.json"))
    return copy


def test_every_generation_is_a_run_that_matches_the_ledger(two_generations_root):
    root = two_generations_root
    target = files.read_target(root)
    assert target is not None and target["backend"] == "embedded"
    view, rows = dump(target), Ledger(root).rows()
    reg = read_json(root / "registry.json")
    assert sorted(k for k in view["runs"] if not k[1]) == [(r["GEN_ID"], "") for r in rows]
    c = client(target)
    for r in rows:
        run = view["runs"][(r["GEN_ID"], "")]
        meta = read_json(root / "models" / r["child_sha"] / "meta.json")
        assert run["status"] == "FINISHED" and run["name"] == r["GEN_ID"]
        for k in ("parent_sha", "data_delta_sha", "steps", "replay_k"):
            assert run["params"][k] == r[k], k
        assert float(run["params"]["lr"]) == pytest.approx(float(r["lr"]))
        assert run["params"]["config_hash"] and run["params"]["seed"] == "0"
        assert run["params"]["method"] == (meta["config"]["train"]["method"] if r["parent_sha"] else "base")
        assert run["tags"]["evo.decision"] == r["decision"] and run["tags"]["evo.reason"] == r["reason"][:5000]
        # the step curve is the workers' reports: the val loss at each checkpoint, as the model's meta has it
        assert run["metrics"]["val_loss"] == [(s, pytest.approx(v)) for s, v in meta["val_curve"]]
        assert [s for s, _ in run["metrics"]["train_loss"]] == [s for s, _ in meta["val_curve"]]
        ev = read_json(root / "evals" / f"{r['GEN_ID']}.json")
        for side in ("child", "parent") if r["parent_sha"] else ("child",):  # every eval of the gate, both sides
            res = ev[side]
            for key, want in (("generalization", res["generalization"]["value"]), ("recall", res["recall"]),
                              ("style_drift", res["style_drift"]["hits"]), ("perplexity", res["perplexity"])):
                if want is not None:
                    assert run["metrics"][f"{side}/{key}"] == [(0, pytest.approx(want))], (side, key)
        if r["parent_sha"]:  # the gate's scores (generation 0 is only evaluated)
            numeric = {k: v for k, v in ev["scores"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            assert numeric and {k: run["metrics"][f"gate/{k}"] for k in numeric} == {k: [(0, v)] for k, v in numeric.items()}
            assert "meta.json" in run["artifacts"] and f"{r['GEN_ID']}.json" in run["artifacts"]
        assert view["models"][r["GEN_ID"]] == [(r["child_sha"], (r["GEN_ID"], ""), "READY")]
        (lm,) = c.search_logged_models([run_exp(c, target)], filter_string=f"name = '{r['GEN_ID']}'")
        folder = root / "models" / r["child_sha"]  # the adapter (gen-0: the base) as the logged model's files
        assert sorted(f.path for f in c.list_logged_model_artifacts(lm.model_id)) == sorted(p.name for p in folder.iterdir())
    ever = []
    for h in reg["history"]:
        if h["alias"] == "champion" and h["to"] not in ever:
            ever.append(h["to"])
    assert [v[0] for _, v in sorted(view["versions"].items())] == ever
    assert view["aliases"]["champion"] == 1 + ever.index(reg["aliases"]["champion"])
    assert "candidate" not in view["aliases"] and reg["aliases"]["candidate"] is None
    champion = c.get_model_version_by_alias(target["model_name"], "champion")
    assert champion.tags["evo.sha"] == reg["aliases"]["champion"]


def run_exp(c, target: dict) -> str:
    return c.get_experiment_by_name(target["experiment"]).experiment_id


def test_sync_rebuilds_the_same_view_and_a_second_sync_changes_nothing(two_generations_root, tmp_path, capsys):
    clean = dump(files.read_target(two_generations_root))
    copy = fresh_copy(two_generations_root, tmp_path)
    assert live.cmd_sync(str(copy), "sync", None) == 0
    target = files.read_target(copy)
    assert target["uri"] != files.read_target(two_generations_root)["uri"]  # the copy's own store
    once = dump(target)
    assert once == clean
    t0 = time.perf_counter()
    live.cmd_sync(str(copy), "sync", None)
    assert dump(target) == once
    assert "mlflow ui --backend-store-uri sqlite:///" in capsys.readouterr().out
    print(f"a sync with nothing to send: {time.perf_counter() - t0:.1f} s")
    # a root made before tracking was on (no tracking/ at all): every run, param, tag, final metric, artifact,
    # model and alias as the live view; the curves are the val loss the models' metas kept (no train loss)
    before = tmp_path / "before"
    shutil.copytree(two_generations_root, before, ignore=shutil.ignore_patterns("tracking"))
    assert live.cmd_sync(str(before), "sync", None) == 0
    old = dump(files.read_target(before))
    for view in (old, clean):
        for run in view["runs"].values():
            run["metrics"].pop("train_loss", None)
    assert old == clean


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


def before_gen2(copy: Path) -> tuple[list[str], dict, dict]:
    """The copy as it was when generation 2 started: its ledger row, registry entries and step reports
    taken away (returned, to be put back as the generation goes on)."""
    ledger, reg = (copy / "ledger.csv").read_text(), read_json(copy / "registry.json")
    steps = files.steps_path(copy, "gen-2")
    lines = steps.read_text().splitlines(keepends=True)
    steps.unlink()
    sha2 = next(s for s, m in reg["models"].items() if m["gen_id"] == "gen-2")
    cut = next(i for i, h in enumerate(reg["history"]) if sha2 in (h["to"], h["from"]))
    earlier = {"models": {s: m for s, m in reg["models"].items() if s != sha2}, "history": reg["history"][:cut],
               "aliases": {"champion": reg["history"][cut - 1]["to"] if cut else None, "candidate": None}}
    atomic_write_json(copy / "registry.json", {**reg, **earlier})
    (copy / "ledger.csv").write_text("".join(ledger.splitlines(keepends=True)[:-1]))
    return lines, reg, {"ledger": ledger}


def test_a_server_that_stops_mid_generation_loses_nothing(two_generations_root, mlflow_server, demo_dir, tmp_path):
    clean = dump(files.read_target(two_generations_root))
    copy = fresh_copy(two_generations_root, tmp_path)
    assert [r["GEN_ID"] for r in Ledger(copy).rows()][-1] == "gen-2"
    lines, reg, saved = before_gen2(copy)
    cfg = tiny_config(demo_dir, "tracking.backend=mlflow", f"tracking.uri={mlflow_server.uri}", "tracking.timeout_s=3")
    said: list[str] = []
    track = live.start(cfg, copy, "gen-2", said.append)  # gen-0 and gen-1 synced first: the target is new
    assert track.opened.wait(60)  # by the tracker's thread
    steps = files.steps_path(copy, "gen-2")
    steps.parent.mkdir(parents=True, exist_ok=True)
    steps.write_text(lines[0])  # the first checkpoint's report is sent
    track.send_new()
    mlflow_server.stop()  # the server goes away in the middle of the generation
    steps.write_text("".join(lines))
    t0 = time.perf_counter()
    track.send_new()
    (copy / "ledger.csv").write_text(saved["ledger"])  # the generation is decided
    atomic_write_json(copy / "registry.json", reg)
    live.after_decision(Decisions(copy), [["append_row", Ledger(copy).get("gen-2")], ["move", "champion", "", ""]])
    track.finish(Ledger(copy).get("gen-2"))
    assert time.perf_counter() - t0 < 20  # one failed request, then nothing more is tried
    assert len(said) == 1 and "evo tracking sync" in said[0], said
    assert files.pending(copy) is not None
    assert live.where(copy).endswith("(not all sent: run `evo tracking sync`)")
    mlflow_server.start()  # back
    target = files.read_target(copy)
    partial = dump(target)
    assert partial["runs"][("gen-2", "")]["metrics"]["val_loss"] == [clean["runs"][("gen-2", "")]["metrics"]["val_loss"][0]]
    # the next generation of this process starts: it tries the server again and sends what was pending
    track3 = live.start(cfg, copy, "gen-3", said.append)
    assert track3.opened.wait(60)
    track3.stop.set()
    assert files.pending(copy) is None and len(said) == 1
    resent = dump(target)
    resent["runs"].pop(("gen-3", ""))
    assert resent == clean  # nothing lost, nothing twice (histories are lists)
    assert live.cmd_sync(str(copy), "sync", None) == 0
    assert files.pending(copy) is None
    after = dump(target)
    after["runs"].pop(("gen-3", ""))
    assert after == clean



def test_a_real_generation_goes_on_when_the_server_stops_and_a_sync_completes_its_view(
        two_generations_root, mlflow_server, demo_dir, tmp_path, capfd):
    """The fault test with a real generation (evo.driver.run_generation): gen-3 of a copy tracked on the
    module's server (beside the other test's root: an experiment each), stopped once gen-3's first step is
    in MLflow; the generation is decided all the same, evo warns once on stderr, the server comes back, a
    sync sends the rest, and the view is what a sync of the same root to a store of its own shows (which
    `test_sync_rebuilds_...` holds equal to the live view)."""
    import threading

    from evo.data.demo import write_demo_data
    from evo.driver import run_generation
    from evo.lineage.root import Lineage
    from evo.progress import Silent
    from evo.tracking import view as view_module

    write_demo_data(tmp_path / "demo3", generations=3)
    copy = fresh_copy(two_generations_root, tmp_path / "live")
    server = mlflow_server
    view_module._WARNED.discard(server.uri)  # the other test's warning about this server, in this process
    try:
        cfg = tiny_config(demo_dir, *LOOSE_GATE, "tracking.backend=mlflow", f"tracking.uri={server.uri}",
                          "tracking.timeout_s=3")
        target = files.target_of(cfg.tracking, cfg.name, copy)

        def stop_at_first_step():  # the server goes away in the middle of gen-3
            c = client(target)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    runs = c.search_runs([run_exp(c, target)], "tags.`evo.gen_id` = 'gen-3'")
                    if runs and c.get_metric_history(runs[0].info.run_id, "val_loss"):
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            server.stop()

        watcher = threading.Thread(target=stop_at_first_step, daemon=True)
        watcher.start()
        capfd.readouterr()
        row = run_generation(cfg, Lineage(copy), 3, str(tmp_path / "demo3" / "gen3.jsonl"), Silent())
        watcher.join(5)
        assert not watcher.is_alive() and server.proc is None, "the server was not stopped during gen-3"
        assert Ledger(copy).get("gen-3")["decision"] == row["decision"] != ""  # decided as always
        err = capfd.readouterr().err
        assert err.count("did not answer") == 1 and "evo tracking sync" in err, err[-3000:]
        assert files.pending(copy) is not None
        server.start()  # back
        partial = dump(target)
        assert partial["runs"][("gen-3", "")]["status"] != "FINISHED"  # stopped before the generation's end
        assert live.cmd_sync(str(copy), "sync", None) == 0 and files.pending(copy) is None
        view = dump(target)
    finally:
        if server.proc is None:
            server.start()
    clean = fresh_copy(copy, tmp_path / "clean")
    live.cmd_sync(str(clean), "sync", None)  # the same root, each part sent once to a store of its own
    assert view == dump(files.read_target(clean))  # nothing lost, nothing twice
    assert view["runs"][("gen-3", "")]["metrics"]["val_loss"] == [
        (s, v) for s, v in read_json(copy / "models" / row["child_sha"] / "meta.json")["val_curve"]]
