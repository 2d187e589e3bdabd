"""`evo demo`, end to end through the CLI, small: it starts and stops its own local Ray."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_command_writes_the_whole_lineage_and_measures_healing_honestly(tmp_path):
    """The real demo (its own config, not the tiny one), two generations: corrections of the 4
    planted error patterns arrive before generation 2, which is asked each pattern's paraphrases
    that no training mix and no val set of the lineage holds (nothing was trained or chosen on them),
    and reports per pattern what it healed; the gate's decision is the one its scores give. How many
    patterns heal is measured, not asserted: under split v3 the demo's gen-2 heals 2 of 4 here (a
    wrong noun next to 'red fox', the planted error once for 'hot cow'), see README "evo demo".
    Generation 0 pretrains for 200 steps instead of the demo's 900, as in bench/bench_generation.py."""
    import csv

    from evo.answers import normalize
    from evo.config import load_config
    from evo.data.store import read_records
    from evo.gate import GenerationScores, gate

    root = tmp_path / "lineage"
    cmd = [sys.executable, "-m", "evo.cli", "demo", "--root", str(root), "--generations", "2",
           "--ab-budget", "30", "--port", "18744", "--set", "model.pretrain.steps=200",
           "--set", "tracking.backend=off"]  # the MLflow view is tests/pipelines/test_tracking.py's
    # under pytest's 900 s; 387 s seen on a loaded 2-core machine
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=840)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gen-2" in out.stdout and "lineage root:" in out.stdout
    for name in ("ledger.csv", "registry.json", "demo_data/demo.yaml", "evals/gen-0.json", "evals/gen-2.json"):
        assert (root / name).exists(), name
    reg = json.loads((root / "registry.json").read_text())
    assert reg["aliases"]["champion"] in reg["models"]
    assert len(list((root / "data").glob("*.parquet"))) == 3
    assert len(list((root / "models").iterdir())) == 3
    rows = {r["GEN_ID"]: r for r in csv.DictReader((root / "ledger.csv").open())}
    assert rows["gen-1"]["decision"] == "promoted", rows["gen-1"]["reason"]
    # the ledger says how sure the test part is of the threshold (issue 28): k/n, its interval, and whether
    # that is within ±0.1 (the demo's 21 items are not)
    g1 = json.loads((root / "evals" / "gen-1.json").read_text())["child"]["generalization"]
    assert rows["gen-1"]["generalization_interval"].startswith(f"{g1['correct']}/{g1['total']}, 95% ")
    assert "threshold 0.85" in rows["gen-1"]["generalization_interval"]
    evals = json.loads((root / "evals" / "gen-2.json").read_text())
    child, parent = evals["child"]["healing"], evals["parent"]["healing"]
    patterns = ["planted-0-red-fox", "planted-1-big-owl", "planted-2-old-bee", "planted-3-hot-cow"]
    assert sorted(child) == sorted(parent) == patterns and all(child[p]["total"] >= 2 for p in patterns)
    healed = [p for p in patterns if not child[p]["violations"]]
    assert rows["gen-2"]["patterns_healed"] == f"{len(healed)}/4", rows["gen-2"]["patterns_healed"]
    assert f"planted-0-red-fox {child['planted-0-red-fox']['violations']}/{child['planted-0-red-fox']['total']}" \
        in out.stdout  # reported per pattern as the run goes
    assert rows["gen-2"]["patterns_recurred"] == ""  # nothing was healed before gen-2 to recur
    assert sum(1 for p in parent.values() if p["violations"]) >= 3  # the parent did not answer them right,
    assert all(p["violations"] == p["repeats_error"] + p["other_wrong"] for p in parent.values())  # told apart
    assert sum(p["violations"] for p in child.values()) < sum(p["violations"] for p in parent.values())
    # asked only where nothing was trained or chosen on: no mix and no val set of the lineage holds a
    # prompt asked (a val part held 2 paraphrases, asked before), and every correction's own prompt is out
    seen = {normalize(r.prompt) for path in [*(root / "runs").glob("*/mix*.parquet"), *(root / "runs").glob("*/val.parquet")]
            for r in read_records(path)}
    offered = {normalize(json.loads(line)["prompt"]) for name in ("paraphrases.jsonl", "corrections.jsonl")
               for line in (root / "demo_data" / name).read_text().splitlines()}
    excluded = {normalize(p) for p in evals["child"]["healing_excluded"]}
    asked = offered - excluded
    assert len(asked) == sum(child[p]["total"] for p in patterns) and not asked & seen, sorted(asked & seen)
    # the gate's decision is the one its scores give (an A/B round may reject it later, and says so)
    cfg = load_config(root / "demo_data" / "demo.yaml")
    verdict = gate(GenerationScores(**evals["scores"]), cfg.gate)
    if rows["gen-2"]["reason"].startswith("A/B"):
        assert verdict.accepted, verdict.reason
    else:
        assert rows["gen-2"]["decision"] == ("promoted" if verdict.accepted else "rejected")
        assert rows["gen-2"]["reason"] == verdict.reason
    # the closing A/B round: both arms served, up to 30 judged pairs (20 are refused: too few for the
    # plan's first look at a 50% tie rate), the result in gen-2's ledger row
    assert "A/B gen-2:" in out.stdout
    # the judge asks phrases of the words gen-2's line was taught that no file holds (one in six of each
    # generation's new phrases is written to none): on gen-1's and gen-2's words, never an untaught word
    assert "asked of the candidate line's words" in out.stdout
    assert rows["gen-2"]["ab_result"].split(":")[0] in ("candidate better", "candidate not worse", "candidate worse",
                                                         "not shown within the margin", "undecided")
    assert (root / "ab" / "round-gen-2.jsonl").exists()
    # an undecided round leaves gen-2 pending as the candidate; any other verdict decides it
    assert (reg["aliases"]["candidate"] is None) == (rows["gen-2"]["decision"] != "pending")
    assert "report:" in out.stdout and "planted-0-red-fox" in (root / "report.html").read_text()
    ledger = subprocess.run([sys.executable, "-m", "evo.cli", "ledger", "--root", str(root)],
                            capture_output=True, text=True, timeout=120)
    assert ledger.stdout.splitlines()[0].split()[:2] == ["GEN_ID", "child_sha"]


def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: -1, steps: 0}\n")
    out = subprocess.run([sys.executable, "-m", "evo.cli", "check", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "train.lr" in out.stderr and "train.steps" in out.stderr and "Traceback" not in out.stderr


def test_cli_reports_bad_data_without_a_traceback(tmp_path):
    from evo.data.demo import write_demo_data

    cfg = write_demo_data(tmp_path / "d", generations=1)
    (tmp_path / "d" / "base.jsonl").write_text('{"prompt": "x"}\n')
    out = subprocess.run([sys.executable, "-m", "evo.cli", "run", str(cfg), "--root", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "base.jsonl:1: has no 'completion'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r" / "ledger.csv").exists() and "Ray" not in out.stdout  # checked before anything ran
