"""What the demo learns and what replay buys, measured on the default demo config in one run.

    .venv/bin/python bench/bench_demo_replay.py

Builds generation 0 once, then runs generations 1-3 twice from it: with replay (k = 100) and
without (k = 0). The gate is switched off for both so each run is one unbroken line of
generations and forgetting can be read off; the demo itself runs with the gate on.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).parent))

import ray  # noqa: E402
from report import update_section  # noqa: E402

from evo.atomic import read_json  # noqa: E402
from evo.config import load_config  # noqa: E402
from evo.data.demo import write_demo_data  # noqa: E402
from evo.driver import generation_zero, run  # noqa: E402
from evo.lineage.root import Lineage  # noqa: E402
from evo.progress import Progress  # noqa: E402
from evo.ray_start import WORKER_ENV  # noqa: E402

NO_GATE = ["gate.min_recall=null", "gate.min_generalization=null", "gate.max_style_drift=null",
           "gate.max_style_drift_rise=null"]


def run_line(demo_yaml: Path, base: Path, dest: Path, k: int) -> dict:
    shutil.copytree(base, dest)
    cfg = load_config(demo_yaml, NO_GATE + [f"train.replay_k={k}"])
    run(cfg, dest, Progress())
    ev = {g: read_json(Lineage(dest).eval_path(g)) for g in ("gen-1", "gen-2", "gen-3")}
    return {
        "g1_child": ev["gen-1"]["child"]["generalization"]["value"],
        "g1_parent": ev["gen-1"]["parent"]["generalization"]["value"],
        "recall_g1_after": {g: ev[g]["child"]["recall_by_gen"]["gen-1"] for g in ("gen-2", "gen-3")},
        "recall_all": {g: ev[g]["child"]["recall"] for g in ev},
        "gen": {g: ev[g]["child"]["generalization"]["value"] for g in ev},
        "drift": {g: ev[g]["child"]["style_drift"]["hits"] for g in ev},
    }


def acc(a: dict) -> str:
    return f"{a['correct'] / a['total']:.3f} ({a['correct']}/{a['total']})"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="evo-bench-demo-"))
    demo_yaml = write_demo_data(work / "data")
    ray.init(address="local", runtime_env={"env_vars": WORKER_ENV})
    base = work / "base"
    generation_zero(load_config(demo_yaml), Lineage(base), Progress())
    results = {k: run_line(demo_yaml, base, work / f"k{k}", k) for k in (100, 0)}
    ray.shutdown()
    r = results[100]
    lines = [
        "Default demo config (tiny Llama, 900 pretraining steps, 300 LoRA steps per generation). Every figure is on "
        "test parts (the 10% of each delta by record hash that no checkpoint, trial or gate threshold was chosen on).",
        "",
        f"- Generation 1 on its test part: **{r['g1_child']:.3f}**; generation 0 on the same part: "
        f"**{r['g1_parent']:.3f}** (goal: ≥ 0.85 and ≤ 0.3).",
        "",
        "| replay k | recall on gen-1's test part after gen-2 | after gen-3 "
        "| recall, all earlier test parts (gen-1, gen-2, gen-3) | generalization (gen-1, gen-2, gen-3) "
        "| style drift (gen-1, gen-2, gen-3) |",
        "|---|---|---|---|---|---|",
    ]
    for k, r in results.items():
        lines.append(
            f"| {k} | {acc(r['recall_g1_after']['gen-2'])} | {acc(r['recall_g1_after']['gen-3'])} | "
            + ", ".join(f"{v:.3f}" for v in r["recall_all"].values()) + " | "
            + ", ".join(f"{v:.3f}" for v in r["gen"].values()) + " | "
            + ", ".join(str(v) for v in r["drift"].values()) + " |")
    body = "\n".join(lines)
    print(body)
    update_section("demo-replay", body)


if __name__ == "__main__":
    main()
