"""Ray Train's start-up in one tiny generation: evo's trainer (Ray's callbacks less the Ray Data one,
which a run without datasets only pays for, and less the placement-group cleaner, whose work the
driver's `cleaned_up` does) against Ray's plain TorchTrainer, in the same process
and on the same cluster, in alternating order.

    .venv/bin/python bench/bench_train_startup.py [--runs N]

Each run is generation 1 of the tiny demo on a fresh copy of the same generation 0, so both sides
train the same thing; "start-up" is fit() to the training loop's first line (the driver's
`runs/gen-1/timings.json`), "train wall" the whole Ray Train run. Writes the section
`train-startup` of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).parent))

import ray  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402
from report import update_section  # noqa: E402

import evo.train.trainer as trainer  # noqa: E402
from evo.atomic import read_json  # noqa: E402
from evo.config import load_config  # noqa: E402
from evo.data.demo import write_demo_data  # noqa: E402
from evo.driver import generation_zero, run_generation  # noqa: E402
from evo.lineage.root import Lineage  # noqa: E402
from evo.progress import Silent  # noqa: E402
from evo.ray_start import one_machine, runtime_env  # noqa: E402

# The test suite's tiny model (tests/helpers TINY): a run whose steps take well under a second.
TINY = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=128", "model.tiny.vocab_size=320", "model.max_length=48",
        "model.pretrain.steps=30", "model.pretrain.batch_size=16", "train.steps=20", "train.checkpoint_every=10",
        "train.batch_size=8", "train.replay_k=20", "eval.max_items=24", "eval.max_new_tokens=12",
        "tracking.backend=off", "gate.min_recall=null", "gate.min_generalization=null",
        "gate.max_style_drift=null", "gate.max_style_drift_rise=null"]


class PlainTrainer(TorchTrainer):
    """Ray's TorchTrainer with every default callback, built by the same `build_trainer`."""

    def __init__(self, *args, caller_cleans_up: bool = False, **kwargs):
        super().__init__(*args, **kwargs)


SIDES = {"evo": trainer.LeanTrainer, "plain TorchTrainer": PlainTrainer}


def main(argv: list[str]) -> int:
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 5
    work = Path(tempfile.mkdtemp(prefix="evo-bench-startup-"))
    cfg = load_config(write_demo_data(work / "data", generations=1), TINY)
    one_machine()
    ray.init(address="local", num_cpus=3, runtime_env=runtime_env())
    generation_zero(cfg, Lineage(work / "base"), Silent())
    got: dict[str, list[dict]] = {side: [] for side in SIDES}
    for i in range(runs):
        order = list(SIDES) if i % 2 == 0 else list(SIDES)[::-1]
        for side in order:
            trainer.LeanTrainer = SIDES[side]  # build_trainer builds this class
            root = work / f"{side.split()[0]}-{i}"
            shutil.copytree(work / "base", root)
            run_generation(cfg, Lineage(root), 1, cfg.data.generations[0], Silent())
            t = read_json(root / "runs" / "gen-1" / "timings.json")["train"]
            got[side].append(t)
            print(f"run {i + 1}/{runs} {side}: start-up {t['ray_startup']:.1f} s, train wall {t['wall']:.1f} s",
                  flush=True)
    trainer.LeanTrainer = SIDES["evo"]
    ray.shutdown()

    def med(side: str, key: str) -> float:
        return statistics.median(t[key] for t in got[side])

    rows = [f"| {side} | {med(side, 'ray_startup'):.1f} | "
            f"{min(t['ray_startup'] for t in got[side]):.1f}-{max(t['ray_startup'] for t in got[side]):.1f} | "
            f"{med(side, 'wall'):.1f} |" for side in SIDES]
    ratio = med("evo", "ray_startup") / med("plain TorchTrainer", "ray_startup")
    wall_ratio = med("evo", "wall") / med("plain TorchTrainer", "wall")
    spread = max(max(t["ray_startup"] for t in ts) - min(t["ray_startup"] for t in ts) for ts in got.values())
    gap = med("plain TorchTrainer", "ray_startup") - med("evo", "ray_startup")
    verdict = (f"less than the {gap:.1f} s between the sides' medians" if spread < gap else
               f"more than the {gap:.1f} s between the sides' medians, so read it as a small saving on one "
               "machine, not a precise one")
    body = f"""## Ray Train's start-up (`bench/bench_train_startup.py`)

`.venv/bin/python bench/bench_train_startup.py --runs {runs}`: generation 1 of the tiny demo (2 DDP workers,
20 steps), {runs} runs a side in alternating order on one local cluster of 3 CPUs, each on a fresh copy
of the same generation 0. Start-up is fit() to the training loop's first line.

| trainer | start-up, median (s) | range (s) | Ray Train run, median (s) |
|---|---|---|---|
{chr(10).join(rows)}

evo's trainer leaves out Ray's Ray Data callback and, as `run_training` builds it, the placement-group
cleaner (an actor process each). Its start-up is **{ratio:.2f}x** the plain TorchTrainer's, its whole
run **{wall_ratio:.2f}x** (medians; the runs of one side spread over {spread:.1f} s, {verdict}). The steps
themselves are under a second here: what is left is Ray Train's controller, its worker processes (each
imports torch, transformers and peft) and their set-up; issue 32 item 3 counts it against a sweep
trial's wall time.
"""
    update_section("train-startup", body)
    print(f"startup_ratio={ratio:.2f} wall_ratio={wall_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
