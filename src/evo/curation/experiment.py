"""Targeted vs random data: does training on a model's weak areas beat more data at random?

From one start model, two lines are trained side by side, round after round:
- targeted: `evo targeted`'s data for the line's current weak areas (on the evaluation set);
- random: the same number of records drawn uniformly (the domain generator's `sample`, or a pool).
Each round trains both lines' children on Ray Train with the same settings (their data plus a
replay sample of the start model's line and of the arm's earlier rounds) and scores them on the
same evaluation set: mean loss and exact-match accuracy, overall and on the weak areas (those of
the round, and those of round 1). Gains are against each arm's own parent and against the start.
No training record repeats an evaluation prompt or any data the lineage already has.

Results go to `ROOT/experiments/targeted_vs_random.json` after every round (a rerun with the same
settings continues after the last finished round); the children are stored, content-addressed,
in `models/` but are not generations: the ledger and registry do not change.
"""

from __future__ import annotations

import math
import random
import time
from typing import Optional

from evo.atomic import atomic_write_json, read_json
from evo.curation.targeted import TargetedError, known_prompts, load_generator, targeted_for, write_jsonl
from evo.curation.weak import analyse, area_of, score_examples
from evo.data.mix import build_mix
from evo.data.records import Record
from evo.data.store import split, write_records
from evo.evals.generate import generate, normalize
from evo.model.lineage_model import load_generation
from evo.storage import uri_of
from evo.train.trainer import run_training
from evo.train.worker_config import training_meta, worker_config

NAME = "targeted_vs_random"
ARMS = ("targeted", "random")


def metrics(root: str, sha: str, records: list[Record], areas: dict[str, list[str]], how: str,
            dtype: str, max_length: int, max_new_tokens: int) -> dict:
    """Mean loss and exact-match accuracy on `records`, overall and on each named set of areas.
    Runs in a Ray task."""

    model, tok = load_generation(root, sha, dtype, verify=False)
    losses = [math.log(s.perplexity) for s in score_examples(model, tok, records, max_length)]
    answers = generate(model, tok, [r.prompt for r in records], max_new_tokens, 64)
    right = [normalize(a) == normalize(r.completion) for a, r in zip(answers, records)]

    def summary(idx: list[int]) -> dict:
        if not idx:
            return {"n": 0, "loss": None, "accuracy": None}
        return {"n": len(idx), "loss": sum(losses[i] for i in idx) / len(idx),
                "accuracy": sum(right[i] for i in idx) / len(idx)}

    out = {"overall": summary(list(range(len(records))))}
    for name, wanted in areas.items():
        keep = set(wanted)
        out[name] = summary([i for i, r in enumerate(records) if area_of(r, how) in keep])
    return out


def gain(before: dict, after: dict) -> dict:
    """Improvement per subset: loss down (positive is better) and accuracy up."""
    out = {}
    for k, a in after.items():
        b = before.get(k) or {}
        ok = a.get("loss") is not None and b.get("loss") is not None
        out[k] = {"loss": (b["loss"] - a["loss"]) if ok else None,
                  "accuracy": (a["accuracy"] - b["accuracy"]) if ok else None}
    return out


def ratio(t: Optional[float], r: Optional[float]) -> Optional[float]:
    if t is None or r is None or abs(r) < 1e-9:
        return None
    return t / r


def random_records(gen, pool: list[Record], n: int, known: set[str], rng: random.Random,
                   tries: int = 20) -> list[Record]:
    """n records never seen before, drawn uniformly from the generator's domain (in batches, until
    there are n or `tries` batches brought nothing new) or from the pool."""
    out, seen = [], set(known)

    def take(source: list[Record]) -> int:
        added = 0
        for r in source:
            key = normalize(r.prompt)
            if key not in seen and len(out) < n:
                seen.add(key)
                out.append(r)
                added += 1
        return added

    if gen is None:
        source = list(pool)
        rng.shuffle(source)
        take(source)
        return out
    misses = 0
    while len(out) < n and misses < tries:
        misses = 0 if take(gen.sample(4 * n, rng)) else misses + 1
    return out


def _train_arm(cfg, lin, arm: str, rnd: int, parent: str, data: list[Record], replay_pool: list[Record],
               steps: int, progress) -> tuple[str, dict]:
    """One child of `parent` on `data` + replay, on Ray Train; stored in models/, not registered."""

    gid = f"exp-{NAME}-r{rnd}-{arm}"
    folder = lin.root / "experiments" / NAME / f"round-{rnd}-{arm}"
    train_part, val = split(data, cfg.data.val_fraction)
    if not val:  # too few records for the hash split: hold out two
        train_part, val = data[:-2], data[-2:]
    mix = build_mix(train_part, replay_pool, cfg.train.replay_k, cfg.data.curriculum, cfg.train.seed + rnd)
    write_records(folder / "mix.parquet", mix.records)
    write_records(folder / "val.parquet", val)
    worker = worker_config(cfg, lin, gid, parent_sha=parent, steps=steps, label=gid,
                           checkpoint_every=min(cfg.train.checkpoint_every, steps),
                           mix_path=uri_of(folder / "mix.parquet"), val_path=uri_of(folder / "val.parquet"))
    progress(f"round {rnd} {arm}: training on {mix.n_delta} records + {mix.n_replay} replayed, {steps} steps")
    out = run_training(worker, cfg.train, lin.ray_storage(), f"{cfg.name}-{gid}-{int(time.time())}",
                       folder / "best")
    meta = training_meta(out, worker, cfg, "", gid)
    meta.update(experiment=NAME, arm=arm, round=rnd)
    child = lin.models.put_adapter(out.best_dir, parent, meta)
    return child, {"records": len(data), "replayed": mix.n_replay, "best_val_loss": out.best_metrics["val_loss"],
                   "train_seconds": out.wall_seconds}


def run_experiment(cfg, lin, start: str, rounds: int, eval_records: list[Record], pool: list[Record],
                   steps: Optional[int], seed: int, progress, fresh: bool = False, min_records: int = 16) -> dict:
    """Round after round until `rounds`, or until the filter keeps fewer than `min_records` targeted
    records (a full round of steps on a handful of records overfits both lines: measured)."""
    import ray

    gen = load_generator(cfg.targeted.generator, cfg.targeted.generator_options)
    if gen is None and not pool:
        raise TargetedError("the random arm needs the domain's generator (targeted.generator) or --pool FILE")
    steps = steps or cfg.train.steps
    how = cfg.healing.weak_area
    path = lin.root / "experiments" / f"{NAME}.json"
    settings = {"start": start, "rounds": rounds, "eval_size": len(eval_records), "steps": steps, "seed": seed,
                "train_lr": cfg.train.lr, "replay_k": cfg.train.replay_k, "weak_threshold": cfg.healing.weak_threshold,
                "weak_area": how, "generator": cfg.targeted.generator, "pool": len(pool)}
    state = read_json(path) if path.exists() and not fresh else None
    if state is not None and state.get("settings") != settings:
        raise TargetedError(f"{path} holds an experiment with other settings; pass --fresh to replace it")
    state = state or {"settings": settings, "rounds": [], "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    eval_task = ray.remote(num_cpus=1)(metrics)
    replay_base = lin.ancestry(start, cfg.data.val_fraction, cfg.data.test_fraction).pool
    args = (cfg.model.dtype, cfg.model.max_length, cfg.eval.max_new_tokens)

    def measure(shas: list[str], areas: dict[str, list[str]]) -> list[dict]:
        return ray.get([eval_task.remote(lin.location, s, eval_records, areas, how, *args) for s in shas])

    rng = random.Random(seed)
    for rnd in range(1, rounds + 1):
        if rnd <= len(state["rounds"]):
            continue
        prev = state["rounds"][-1] if state["rounds"] else None
        parents = {a: prev[a]["child"] if prev else start for a in ARMS}
        earlier = {a: [Record(**r) for d in state["rounds"] for r in d[a]["data_rows"]] for a in ARMS}
        progress(f"round {rnd}/{rounds}: weak areas of the targeted line's model {parents['targeted'][:12]}")
        weak = analyse(lin, cfg, records=eval_records, sha=parents["targeted"])
        areas = weak.report.area_names
        if not areas:
            state["note"] = f"round {rnd}: no weak area above perplexity {cfg.healing.weak_threshold:g}; stopped"
            break
        first_areas = state["rounds"][0]["weak_areas"] if state["rounds"] else areas
        area_sets = {"weak": areas, "weak_round1": first_areas}
        exclude = eval_records + earlier["targeted"] + earlier["random"]
        targeted = targeted_for(lin, cfg, weak, seed=seed + rnd, exclude=exclude)
        del weak  # frees the model before training
        if len(targeted.records) < min_records:
            state["note"] = (f"round {rnd}: the filter kept {len(targeted.records)} targeted record(s), fewer than "
                             f"{min_records}; stopped (the weak areas are nearly exhausted)")
            break
        n = len(targeted.records)
        known = known_prompts(lin, exclude) | {normalize(r.prompt) for r in targeted.records}
        randoms = random_records(gen, pool, n, known, rng)
        if len(randoms) < n:
            raise TargetedError(f"round {rnd}: only {len(randoms)} unseen records for the random arm, {n} needed")
        progress(f"round {rnd}: {n} targeted records over {len(targeted.report.kept_by_area)} areas, "
                 f"{n} random ones; {len(areas)} weak area(s)")
        data = {"targeted": targeted.records, "random": randoms}
        before = measure([parents["targeted"], parents["random"]], area_sets)
        row = {"round": rnd, "weak_areas": areas, "targeted_report": targeted.report.to_json()}
        for arm, b in zip(ARMS, before):
            folder = lin.root / "experiments" / NAME
            write_jsonl(folder / f"round-{rnd}-{arm}.jsonl", data[arm])
            child, info = _train_arm(cfg, lin, arm, rnd, parents[arm], data[arm], replay_base + earlier[arm],
                                     steps, progress)
            row[arm] = {"parent": parents[arm], "child": child, "before": b, **info,
                        "data": str(folder / f"round-{rnd}-{arm}.jsonl"),
                        "data_rows": [r.to_row() for r in data[arm]]}
        if rnd == 1:  # both lines start at the start model
            state["start_metrics"] = before[0]
        start_metrics = state["start_metrics"]
        after = measure([row["targeted"]["child"], row["random"]["child"]], area_sets)
        for arm, a in zip(ARMS, after):
            row[arm]["after"] = a
            row[arm]["gain"] = gain(row[arm]["before"], a)
            row[arm]["gain_from_start"] = gain(start_metrics, a)
        row["ratio"] = {k: {m: ratio(row["targeted"]["gain"][k][m], row["random"]["gain"][k][m])
                            for m in ("loss", "accuracy")} for k in row["targeted"]["gain"]}
        state["rounds"].append(row)
        state["summary"] = summarize(state["rounds"])
        atomic_write_json(path, state)
        progress(f"round {rnd}: " + line(row))
    state["summary"] = summarize(state["rounds"])
    state["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_json(path, state)
    return state


def line(row: dict) -> str:
    def f(x):
        return "n/a" if x is None else f"{x:+.3f}"

    t, r = row["targeted"]["gain"], row["random"]["gain"]
    return (f"weak-area accuracy gain targeted {f(t['weak']['accuracy'])} vs random {f(r['weak']['accuracy'])}, "
            f"loss drop {f(t['weak']['loss'])} vs {f(r['weak']['loss'])}; overall accuracy "
            f"{f(t['overall']['accuracy'])} vs {f(r['overall']['accuracy'])}")


def summarize(rounds: list[dict]) -> dict:
    """Per round, the targeted line's lead over the random line since the start (cumulative), and
    whether that lead grew round on round (gains compounding) on the first round's weak areas."""
    lead = []
    for row in rounds:
        t, r = row["targeted"]["gain_from_start"], row["random"]["gain_from_start"]
        lead.append({k: {m: (t[k][m] - r[k][m]) if t[k][m] is not None and r[k][m] is not None else None
                         for m in ("loss", "accuracy")} for k in ("overall", "weak_round1")})
    acc = [x["weak_round1"]["accuracy"] for x in lead]
    grows = len(acc) > 1 and all(a is not None for a in acc) and all(b > a for a, b in zip(acc, acc[1:]))
    return {"lead_from_start": lead, "lead_grows_each_round": grows if len(acc) > 1 else None}
