"""`evo compare-bases` on the demo domain: the tiny base (0.5M parameters, pretrained here on the
made-up language) against SmolLM2-135M-Instruct, the same deltas, settings and test parts.

    .venv/bin/python bench/bench_compare_bases.py [--generations 2] [--steps 100]

SmolLM2 trains about 2.4 s a step here at the demo's batch (16, 2 workers): the demo's 300 steps
would take 12 minutes a generation, so both bases get 100.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).parent))

from report import update_section  # noqa: E402

from evo.compare import compare_bases, reasons, table  # noqa: E402
from evo.data.demo import write_demo_data  # noqa: E402
from evo.driver import run  # noqa: E402
from evo.ray_start import start_ray  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100, help="LoRA steps per generation, both bases (the demo: 300)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evo-bench-bases-"))
    cfg = write_demo_data(work / "data", generations=args.generations)
    start_ray(None)
    t0 = time.perf_counter()
    results = compare_bases(str(cfg), ["tiny", "smollm2"], work / "compare", [f"train.steps={args.steps}"],
                            generations=args.generations, run=run)
    body = "\n".join([
        f"The demo config as `evo demo` writes it, with {args.steps} LoRA steps per generation ({args.generations} "
        "generations, lr 3e-3, "
        "batch 16, 2 Ray Train workers, replay 100), once per base; test accuracy is exact match on each "
        "generation's test part (the same records for both bases). Latency: greedy answers to the last "
        f"generation's test prompts, one at a time, 2 threads. {time.perf_counter() - t0:.0f} s in all.",
        "",
        table(results),
        "",
        reasons(results),
    ])
    print(body)
    update_section("compare-bases", body)


if __name__ == "__main__":
    main()
