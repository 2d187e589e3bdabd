"""The demo's claims, measured by running the commands a user runs, and written into docs/benchmarks.md.

    .venv/bin/python bench/bench_demo.py [--skip-drift] [--skip-experiment] [--seeds 3] [--rounds 3]

1. `evo demo` (3 generations, the closing A/B round), timed; from its eval files, the self-healing
   table (section `demo-healing`): per planted pattern, the untrained paraphrases asked and how the
   parent and each child answered them, the parent's wrong answers split into the planted error and
   other wrong answers.
2. `evo experiment --gen gen-2 --rounds R --seeds S --fresh` on that lineage, timed (section `experiment`):
   the lead of targeted over random data per round, mean over seeds with a 95% interval.
3. `evo demo --drift` in a fresh root, timed (section `demo-drift`): every ledger row, to show
   whether the stop rule fired on the full demo and what it restored.
4. `evo demo --set train.seed=S` for the other training seeds (`--demo-seeds`, default 1 and 2), each in
   a fresh root (section `demo-seeds`): per seed and generation, the gate's decision and its figures and
   the closing A/B round, so that the demo's story can be read against its spread over seeds.

Each command runs in its own process, one after another (one Ray cluster at a time).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from report import update_section  # noqa: E402

from evo.atomic import read_json  # noqa: E402

EVO = [sys.executable, "-m", "evo.cli"]


def timed(cmd: list[str], log: Path) -> float:
    print("$ evo", " ".join(cmd[3:]), f"(log: {log})", flush=True)
    t0 = time.monotonic()
    with log.open("w") as f:
        out = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    secs = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}); see {log}:\n" + "\n".join(log.read_text().splitlines()[-20:]))
    return secs


def mins(secs: float) -> str:
    return f"{int(secs // 60)} min {int(secs % 60)} s"


def ledger(root: Path) -> list[dict]:
    with (root / "ledger.csv").open() as f:
        return list(csv.DictReader(f))


def healing_section(root: Path, secs: float, log: Path) -> str:
    rows = ledger(root)
    gens = [r["GEN_ID"] for r in rows if r["GEN_ID"] != "gen-0"]
    ev = {g: read_json(root / "evals" / f"{g}.json") for g in gens}
    asked = [g for g in gens if ev[g]["child"].get("healing")]
    if not asked:
        return f"`evo demo`: {mins(secs)}. No generation was asked the healing items."
    first = asked[0]
    parent_h = ev[first]["parent"]["healing"]
    cols = [f"{first}'s parent"] + asked
    lines = ["Each cell: answers that repeat the planted error / other wrong answers / paraphrases asked.", "",
             "| pattern | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def cell(h: dict) -> str:
        return f"{h.get('repeats_error', '?')} / {h.get('other_wrong', '?')} / {h['total']}"

    for p in sorted(parent_h):
        lines.append(f"| {p} | " + " | ".join([cell(parent_h[p])] + [cell(ev[g]["child"]["healing"][p]) for g in asked]) + " |")
    excluded = len(ev[first]["child"].get("healing_excluded") or [])
    dec = "; ".join(f"{r['GEN_ID']} {r['decision']}" + (f" ({r['reason']})" if r["decision"] != "promoted" else "")
                    for r in rows)
    healed = {g: next(r["patterns_healed"] for r in rows if r["GEN_ID"] == g) for g in asked}
    recurred = {g: next(r["patterns_recurred"] for r in rows if r["GEN_ID"] == g) for g in asked}
    ab = [ln for ln in log.read_text().splitlines() if ln.startswith("A/B ")]
    return "\n".join([
        f"`evo demo` (3 generations and the closing A/B round, fresh root): **{mins(secs)}**.",
        "",
        f"Healing items asked from {first} on: paraphrases of each planted pattern that no training mix and no val set of "
        f"the lineage holds ({excluded} prompts were left out because one held them: the corrections' own prompts, which "
        "train, and any paraphrase a mix or val set holds).",
        "",
        *lines,
        "",
        f"- Ledger: {dec}.",
        f"- patterns_healed: {', '.join(f'{g} {v or chr(8211)}' for g, v in healed.items())}; "
        f"patterns_recurred: {', '.join(f'{g} {v or chr(8211)}' for g, v in recurred.items())}.",
        *([f"- {ab[-1]}"] if ab else []),
    ])


def experiment_section(root: Path, secs: float, cmd: list[str]) -> str:
    from evo.experiment import Experiment, show_interval

    exp = Experiment.from_json(read_json(root / "experiments" / "targeted_vs_random.json"))
    lines = ["| round | seeds | records per line | lead: accuracy on the fixed weak areas | lead: overall accuracy | "
             "lead: loss drop on the fixed areas |", "|---|---|---|---|---|---|"]
    for r in exp.summary:
        lines.append(f"| {r.round} | {r.seeds} | {r.records:.0f} | {show_interval(r.lead['areas']['accuracy'])} | "
                     f"{show_interval(r.lead['overall']['accuracy'])} | {show_interval(r.lead['areas']['loss'])} |")
    per_seed = ["| seed | fixed areas (eval items) | start | targeted after each round | random after each round | "
                "refused as within one word of an eval prompt: targeted / random | note |", "|---|---|---|---|---|---|---|"]
    for rep in exp.replications:
        def f(x):
            return "n/a" if x is None else f"{x:.2f}"

        t = ", ".join(f(x.targeted.after["areas"].accuracy) for x in rep.rounds)
        r = ", ".join(f(x.random.after["areas"].accuracy) for x in rep.rounds)
        near = ", ".join(f"{x.targeted.near_eval_dropped} / {x.random.near_eval_dropped}" for x in rep.rounds)
        per_seed.append(f"| {rep.seed} | {len(rep.areas)} ({rep.area_items}) | {f(rep.start['areas'].accuracy)} | {t} | "
                        f"{r} | {near} | {rep.note or chr(8211)} |")
    st = exp.settings
    return "\n".join([
        f"`evo {' '.join(cmd[3:])}` on the lineage `evo demo` wrote: **{mins(secs)}**. Evaluation set: {st['eval']}; "
        f"probe set: {st['probe']}; disjoint from each other and from the start line's data; "
        f"{st['steps']} steps per child; weak areas per adjective (`{st['weak_area']}`), found on the probe set "
        "with the start model and fixed for both lines. Lead: targeted minus random, mean over seeds with a 95% t "
        "interval.",
        "",
        *lines,
        "",
        "Accuracy on the fixed weak areas, per seed:",
        "",
        *per_seed,
    ])


def drift_section(root: Path, secs: float) -> str:
    rows = ledger(root)
    lines = ["| generation | decision | reason | restored | generalization | style drift |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['GEN_ID']} | {r['decision']} | {r['reason']} | {r.get('restored') or chr(8211)} | "
                     f"{r['eval_generalization']} | {r['eval_style_drift']} |")
    stopped = [r for r in rows if r["decision"] == "stopped"]
    champ = read_json(root / "registry.json").get("aliases", {}).get("champion", "")
    gen_of = {r["child_sha"]: r["GEN_ID"] for r in rows}
    verdict = (f"The stop rule fired at {stopped[0]['GEN_ID']} and restored {stopped[0].get('restored') or '?'}."
               if stopped else "The stop rule did not fire.")
    return "\n".join([f"`evo demo --drift` (3 generations, then 2 drifting deltas, fresh root): **{mins(secs)}**.", "",
                      *lines, "", f"{verdict} Champion at the end: {gen_of.get(champ, champ[:12])}."])


def seeds_section(runs: dict[int, tuple[Path, float]]) -> str:
    """One row per (training seed, generation): what the gate decided on which figures; the A/B line."""
    lines = ["| train.seed | generation | decision | generalization (parent) | recall (parent) | recall items | "
             "A/B round |", "|---|---|---|---|---|---|---|"]
    promoted = {}
    for seed, (root, _) in sorted(runs.items()):
        rows = [r for r in ledger(root) if r["GEN_ID"] != "gen-0"]
        promoted[seed] = sum(r["decision"] == "promoted" for r in rows)
        for r in rows:
            sc = read_json(root / "evals" / f"{r['GEN_ID']}.json")["scores"]

            def f(x):
                return chr(8211) if x is None else f"{x:.2f}"

            lines.append(f"| {seed} | {r['GEN_ID']} | {r['decision']} | {f(sc['generalization'])} "
                         f"({f(sc['parent_generalization'])}) | {f(sc['recall'])} ({f(sc['parent_recall'])}) | "
                         f"{r.get('recall_items') or chr(8211)} | {r.get('ab_result') or chr(8211)} |")
    took = ", ".join(f"seed {s} {mins(t)}" for s, (_, t) in sorted(runs.items()))
    return "\n".join([
        "`evo demo` with the same data and config, each training seed in a fresh root (`train.seed` seeds "
        "generation 0's pretraining, every child's adapter and its batches): "
        + "; ".join(f"seed {s}: {n} of 3 children promoted" for s, n in sorted(promoted.items())) + f" ({took}).",
        "", *lines])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gen", default="gen-2", help="the experiment's start model")
    ap.add_argument("--skip-experiment", action="store_true")
    ap.add_argument("--skip-drift", action="store_true")
    ap.add_argument("--demo-seeds", default="1,2", help="other training seeds to run the demo with ('' for none)")
    ap.add_argument("--work", help="folder for the lineages and logs (default: a new temp folder)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="evo-bench-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "lineage"
    secs = None
    if not (root / "ledger.csv").exists():
        secs = timed(EVO + ["demo", "--root", str(root)], work / "demo.log")
        update_section("demo-healing", healing_section(root, secs, work / "demo.log"))
    if a.demo_seeds:
        runs = {0: (root, secs or 0.0)}
        for seed in (int(x) for x in a.demo_seeds.split(",")):
            sroot = work / f"seed-{seed}"
            if not (sroot / "ledger.csv").exists():
                runs[seed] = (sroot, timed(EVO + ["demo", "--root", str(sroot), "--set", f"train.seed={seed}"],
                                           work / f"demo-seed-{seed}.log"))
            else:
                runs[seed] = (sroot, 0.0)
        update_section("demo-seeds", seeds_section(runs))
    if not a.skip_experiment:
        cmd = EVO + ["experiment", "--root", str(root), "--gen", a.gen, "--rounds", str(a.rounds), "--seeds", str(a.seeds),
                     "--fresh"]
        secs = timed(cmd, work / "experiment.log")
        update_section("experiment", experiment_section(root, secs, cmd))
    if not a.skip_drift:
        droot = work / "drift"
        secs = timed(EVO + ["demo", "--drift", "--root", str(droot)], work / "drift.log")
        update_section("demo-drift", drift_section(droot, secs))


if __name__ == "__main__":
    main()
