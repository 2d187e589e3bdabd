"""What a generation costs as the lineage grows: 30 generations of small deltas on the tiny model, in one root.

    flock /tmp/evo-ray.lock .venv/bin/python bench/bench_depth.py [--generations 30] [--records 40]

The demo's base (generation 0, pretrained once) and its style probes; then `--generations` deltas of
`--records` new translations each (phrases of the demo's full vocabulary that no earlier file holds,
drawn once with a fixed seed), every one trained with the same steps and settings. The gate's
absolute floors and the stop rule are off, so each child is promoted and the next one grows from it:
generation N's parent is a chain of N-1 adapters on the base, the replay pool and the recall items
cover N-1 deltas. What is measured is cost, not quality: the figures of learning are the demo's.

For each generation the driver's own `runs/<gen>/timings.json` (`evo.driver.write_timings`) gives the
wall seconds of its phases (ingest, mix, train, evals, decide, tracking) and, inside training and the
evals, what went to loading models; `evo report` is timed after each generation (what a user runs to
look at it). Baseline: generation 2 of the same run. A component's growth is the least-squares slope
of its seconds against the generation (2 to N), and its fitted value at N over that at 2.

Writes the table and a PNG plot (docs/bench_depth.png) into docs/benchmarks.md. Last line:
`gen_s=<2>,<N> ratio=<N/2 fitted> slope_s=<per generation>`. Goal: generation 30 within 1.2x of 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).parent))

import ray  # noqa: E402
from report import DOC, update_section  # noqa: E402

from evo.atomic import atomic_write_text  # noqa: E402
from evo.config import load_config  # noqa: E402
from evo.data import demo  # noqa: E402
from evo.driver import generation_zero, run_generation  # noqa: E402
from evo.lineage.root import Lineage  # noqa: E402
from evo.progress import Silent  # noqa: E402
from evo.report import build_report  # noqa: E402

PHASES = ("ingest", "mix", "train", "evals", "decide", "tracking", "report")
SETTINGS = [
    "gate.min_recall=null", "gate.min_generalization=null", "gate.max_style_drift_rise=null", "gate.patience=1000",
    "train.steps=60", "train.checkpoint_every=30", "tracking.backend=off",
]


def write_deltas(folder: Path, n: int, size: int, seed: int = 0) -> list[str]:
    """`n` files of `size` translations each, of phrases no earlier file (nor the base) holds."""
    lex = demo._lexicon(seed)
    known = {(r["prompt"]) for r in demo.translation_records(0, lex, seed)}
    nouns, adjs, verbs = demo._vocab(3)
    combos = [c for c in itertools.product(adjs, nouns, verbs)
              if demo.prompt_of(*c) not in known and c not in demo.paraphrased()]
    random.Random(seed).shuffle(combos)
    if len(combos) < n * size:
        raise SystemExit(f"the demo's vocabulary has {len(combos)} new phrases, fewer than {n} x {size}")
    names = []
    for g in range(n):
        rows = [{"prompt": demo.prompt_of(*c), "completion": demo.translate(lex, *c), "category": "translate"}
                for c in combos[g * size:(g + 1) * size]]
        names.append(f"depth{g + 1}.jsonl")
        atomic_write_text(folder / names[-1], "".join(json.dumps(r) + "\n" for r in rows))
    return names


def fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = [r["gen"] for r in rows]
    bottom = [0.0] * len(rows)
    for phase in PHASES:
        ys = [r[phase] for r in rows]
        ax.bar(xs, ys, bottom=bottom, label=phase)
        bottom = [b + y for b, y in zip(bottom, ys)]
    ax.set_xlabel("generation (its parent is a chain of generation - 1 adapters)")
    ax.set_ylabel("wall seconds")
    ax.set_title("A generation's cost by lineage depth (tiny model, same delta size and steps)")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generations", type=int, default=30)
    ap.add_argument("--records", type=int, default=40)
    ap.add_argument("--no-doc", action="store_true", help="print only; docs/benchmarks.md untouched")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evo-bench-depth-"))
    demo.write_demo_data(work / "data", generations=1)
    names = write_deltas(work / "data", args.generations, args.records)
    cfg = load_config(work / "data" / "demo.yaml", SETTINGS + [f"data.generations={json.dumps(names)}",
                                                               "data.corrections={}"])
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    lin = Lineage(work / "root")
    generation_zero(cfg, lin, Silent())
    rows = []
    for index, path in enumerate(cfg.data.generations, start=1):
        t0 = time.perf_counter()
        row = run_generation(cfg, lin, index, path, Silent())
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        build_report(lin.root, progress=lambda m: None)
        t_report = time.perf_counter() - t1
        tim = json.loads((lin.run_dir(row["GEN_ID"]) / "timings.json").read_text())
        ph, tr, ev = tim["phases"], tim["train"], tim["evals"]
        r = {"gen": index, "decision": row["decision"], **{p: ph.get(p, 0.0) for p in PHASES[:-1]},
             "report": t_report, "wall": wall + t_report, "ray_startup": tr["ray_startup"] or 0.0,
             "train_load": tr["load"] or 0.0, "steps": tr["train"] or 0.0,
             "eval_load": max(ev["child"].get("load", 0.0), ev["parent"].get("load", 0.0)),
             "recall_items": ev["recall_items"] or 0}
        rows.append(r)
        print(f"gen-{index} ({row['decision']}): {r['wall']:.1f} s = " + ", ".join(f"{p} {r[p]:.1f}" for p in PHASES)
              + f"; train load {r['train_load']:.2f}, eval load {r['eval_load']:.2f}, recall items {r['recall_items']}",
              flush=True)
    ray.shutdown()
    later = [r for r in rows if r["gen"] >= 2]
    xs = [r["gen"] for r in later]
    n = rows[-1]["gen"]
    growth = {}
    for key in (*PHASES, "train_load", "eval_load", "ray_startup", "steps", "wall"):
        slope, icpt = fit(xs, [r[key] for r in later])
        at2, atn = icpt + 2 * slope, icpt + n * slope
        growth[key] = (slope, at2, atn, atn / at2 if at2 > 0 else float("nan"))
    png = DOC.parent / "bench_depth.png"
    table = "\n".join(
        f"| gen-{r['gen']} | {r['wall']:.1f} | " + " | ".join(f"{r[p]:.1f}" for p in PHASES)
        + f" | {r['train_load']:.2f} | {r['eval_load']:.2f} | {r['recall_items']} |" for r in rows)
    fits = "\n".join(f"| {k} | {s * 1000:+.0f} | {a:.2f} | {b:.2f} | {q:.2f}x |" for k, (s, a, b, q) in growth.items())
    body = f"""
## Cost by lineage depth (`bench/bench_depth.py`)

{n} generations of {args.records} new translations each on the tiny model, in one root, every child
promoted (the gate's floors and the stop rule off: this measures cost, not learning), the same steps
({cfg.train.steps}) and settings for each. Generation N's parent is a chain of N-1 adapters; the replay
pool and the recall items cover the N-1 deltas before it. Phases from the driver's
`runs/<gen>/timings.json`; "report" is `evo report` run after the generation.

| generation | wall (s) | {' | '.join(PHASES)} | train: load parent (s) | evals: load model (s) | recall items |
|---|---|{'---|' * len(PHASES)}---|---|---|
{table}

Fitted growth (least squares over generations 2 to {n}):

| component | slope (ms per generation) | fitted at gen-2 (s) | fitted at gen-{n} (s) | gen-{n} / gen-2 |
|---|---|---|---|---|
{fits}

![cost by depth](bench_depth.png)
"""
    if not args.no_doc:
        plot(rows, png)
        update_section("depth", body)
    w = growth["wall"]
    print(f"gen_s={rows[1]['wall']:.1f},{rows[-1]['wall']:.1f} ratio={w[3]:.2f} slope_s={w[0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
