"""`evo demo`, end to end through the CLI, small: it starts and stops its own local Ray."""

import json
import subprocess
import sys

import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.integration


def test_demo_command_writes_the_whole_lineage(tmp_path):
    root = tmp_path / "lineage"
    sets = [a for kv in TINY for a in ("--set", kv)]
    no_gate = ["--set", "gate.min_recall=null", "--set", "gate.min_generalization=null", "--set", "gate.max_style_drift=null"]
    cmd = [sys.executable, "-m", "evo.cli", "demo", "--root", str(root), "--generations", "1", *sets, *no_gate,
           "--ab-budget", "20", "--port", "18744"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gen-1" in out.stdout and "lineage root:" in out.stdout
    for name in ("ledger.csv", "registry.json", "demo_data/demo.yaml", "evals/gen-0.json", "evals/gen-1.json"):
        assert (root / name).exists(), name
    reg = json.loads((root / "registry.json").read_text())
    assert reg["aliases"]["champion"] in reg["models"] and reg["aliases"]["candidate"] is None
    assert len(list((root / "data").glob("*.parquet"))) == 2
    assert len(list((root / "models").iterdir())) == 2
    # the closing A/B round: both arms served, 20 judged pairs, the result in gen-1's ledger row
    assert "A/B gen-1:" in out.stdout
    import csv
    rows = list(csv.DictReader((root / "ledger.csv").open()))
    assert rows[1]["ab_result"].split(":")[0] in ("candidate better", "candidate worse", "undecided")
    assert (root / "ab" / "round-gen-1.jsonl").exists()
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
