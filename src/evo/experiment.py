"""Targeted vs random data: does training on a model's weak areas beat as much data drawn at random?

One replication (a "seed") runs like this, from one start model:

1. Two sets are drawn from the domain, disjoint from each other and from every prompt the start
   model's line was trained or tested on (`start_prompts`): the evaluation set (scores only) and the
   probe set (diagnosis only). With `--data` the
   evaluation set is that file, the same in every seed; with `--probe` the probe set likewise.
2. The areas compared are fixed before round 1: the start model's weak areas on the probe set.
   Both lines are scored on the evaluation items of those areas and on the whole evaluation set.
3. Round after round, two lines are trained side by side from the start model:
   - targeted: `evo targeted`'s data for the targeted line's current weak areas on the probe set;
   - random: as many records drawn uniformly (the domain generator's `sample`, or `--pool`).
   No record of either line is within one word of an evaluation prompt (one word changed, added
   or removed), nor repeats the start line's data, the probe set or an earlier round: the same
   filter for both lines, and how many candidates each lost to the evaluation filter is kept.
   Each child is trained on Ray Train with the same settings (its data plus a replay sample of the
   start model's line and of its own line's earlier rounds) and scored on the evaluation set.
4. The lead of a round: targeted's accuracy minus random's (and random's loss minus targeted's),
   on the fixed areas and overall. Both lines start at the same model, so this is also the
   difference of their gains since the start.

Seeds are independent replications: the draws of both sets, the targeted sampling, the random
draw and the training seed all change with the seed. Over seeds, each round's lead is reported as
a mean with a 95% Student-t interval (none for a single seed).

Results go to `ROOT/experiments/targeted_vs_random.json` after every round (a rerun with the same
settings continues after the last finished round; a rerun with more `--seeds` adds seeds). The
children are stored, content-addressed, in `models/` but are not generations: the ledger and
registry do not change.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from evo.answers import normalize
from evo.atomic import atomic_write_json, read_json
from evo.curation.targeted import (
    NEAR_EVAL,
    TargetedError,
    WordNeighbours,
    key_of,
    load_generator,
    targeted_for,
    write_jsonl,
)
from evo.curation.weak import analyse, area_of, score_examples
from evo.data.ingest import ingest_jsonl
from evo.data.mix import build_mix
from evo.data.records import Record
from evo.data.store import split, write_records
from evo.healing.corrections import CorrectionStore
from evo.model.generate import greedy
from evo.model.lineage_model import load_generation
from evo.storage import uri_of
from evo.train.trainer import run_training
from evo.train.worker_config import training_meta, worker_config

NAME = "targeted_vs_random"
ARMS = ("targeted", "random")
SUBSETS = ("areas", "overall")  # the fixed areas' evaluation items; the whole evaluation set
METRICS = ("accuracy", "loss")


@dataclass
class Score:
    """Mean loss and exact-match accuracy of one model on a subset of the evaluation set."""

    n: int
    loss: Optional[float]
    accuracy: Optional[float]


@dataclass
class Arm:
    """One line's child in one round."""

    parent: str
    child: str
    records: int  # new records trained on (both lines get as many)
    near_eval_dropped: int  # candidates this line lost to the one-word filter
    replayed: int
    best_val_loss: float
    train_seconds: float
    data: str  # the JSONL of its records
    data_rows: list[dict]
    before: dict[str, Score]  # its parent, on SUBSETS
    after: dict[str, Score]


@dataclass
class Round:
    round: int
    targeted_areas: list[str]  # what the targeted line aimed at (its weak areas on the probe set)
    targeted_report: dict
    targeted: Arm
    random: Arm


@dataclass
class Replication:
    """One seed: its own evaluation and probe sets, its fixed areas, its rounds."""

    seed: int
    eval_file: str
    probe_file: str
    eval_size: int
    probe_size: int
    eval_sha: str  # of the evaluation prompts, so two seeds on one --data file show it
    areas: list[str]  # fixed before round 1: the start model's weak areas on the probe set
    area_items: int  # evaluation items in those areas
    start: dict[str, Score]
    rounds: list[Round] = field(default_factory=list)
    note: str = ""  # why it stopped before the last round, if it did
    finished: bool = False


@dataclass
class Interval:
    """Mean over seeds with a 95% Student-t interval (None with fewer than two values)."""

    n: int
    mean: Optional[float]
    low: Optional[float]
    high: Optional[float]
    values: list[float]


@dataclass
class RoundSummary:
    round: int
    seeds: int  # replications that finished this round
    records: float  # mean records per line
    lead: dict[str, dict[str, Interval]]  # subset -> metric -> targeted's lead over random


@dataclass
class Experiment:
    settings: dict
    replications: list[Replication]
    summary: list[RoundSummary]
    started: str
    finished: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> Experiment:
        def scores(d: dict) -> dict[str, Score]:
            return {k: Score(**v) for k, v in d.items()}

        def arm(d: dict) -> Arm:
            return Arm(**{**d, "before": scores(d["before"]), "after": scores(d["after"])})

        reps = [Replication(**{**r, "start": scores(r["start"]),
                               "rounds": [Round(**{**x, "targeted": arm(x["targeted"]), "random": arm(x["random"])})
                                          for x in r["rounds"]]}) for r in raw["replications"]]
        summary = [RoundSummary(**{**s, "lead": {k: {m: Interval(**i) for m, i in v.items()} for k, v in s["lead"].items()}})
                   for s in raw["summary"]]
        return cls(raw["settings"], reps, summary, raw["started"], raw.get("finished", ""))


# two-sided 95% quantiles of Student's t, by degrees of freedom (standard tables)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a t interval needs at least two values")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # beyond 30 degrees of freedom: the Cornish-Fisher expansion, within 0.001 of the table
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def interval(values: list[float]) -> Interval:
    if not values:
        return Interval(0, None, None, None, [])
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(1, mean, None, None, list(values))
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(len(values), mean, mean - half, mean + half, list(values))


def lead(t: dict[str, Score], r: dict[str, Score]) -> dict[str, dict[str, Optional[float]]]:
    """Targeted's lead over random: accuracy up, loss down (positive favours targeted)."""
    out = {}
    for k in SUBSETS:
        a, b = t.get(k), r.get(k)
        ok = a is not None and b is not None and a.n > 0 and b.n > 0
        out[k] = {"accuracy": (a.accuracy - b.accuracy) if ok else None, "loss": (b.loss - a.loss) if ok else None}
    return out


def summarize(reps: list[Replication]) -> list[RoundSummary]:
    """Per round, over the replications that finished it: the mean lead and its 95% interval."""
    out = []
    for k in range(1, max((len(r.rounds) for r in reps), default=0) + 1):
        rows = [r.rounds[k - 1] for r in reps if len(r.rounds) >= k]
        leads = [lead(x.targeted.after, x.random.after) for x in rows]
        out.append(RoundSummary(k, len(rows), statistics.fmean(x.targeted.records for x in rows), {
            s: {m: interval([v[s][m] for v in leads if v[s][m] is not None]) for m in METRICS} for s in SUBSETS}))
    return out


def metrics(root: str, sha: str, records: list[Record], areas: list[str], how: str,
            dtype: str, max_length: int, max_new_tokens: int) -> dict[str, dict]:
    """Mean loss and exact-match accuracy on `records`, overall and on those in `areas`. A Ray task."""

    model, tok = load_generation(root, sha, dtype, verify=False)
    losses = [math.log(s.perplexity) for s in score_examples(model, tok, records, max_length)]
    answers = greedy(model, tok, [r.prompt for r in records], max_new_tokens, 64)
    right = [normalize(a) == normalize(r.completion) for a, r in zip(answers, records)]

    def summary(idx: list[int]) -> dict:
        if not idx:
            return {"n": 0, "loss": None, "accuracy": None}
        return {"n": len(idx), "loss": sum(losses[i] for i in idx) / len(idx),
                "accuracy": sum(right[i] for i in idx) / len(idx)}

    keep = set(areas)
    return {"areas": summary([i for i, r in enumerate(records) if area_of(r, how) in keep]),
            "overall": summary(list(range(len(records))))}


def random_records(gen, pool: list[Record], n: int, known: set[str], rng: random.Random,
                   too_close: Optional[WordNeighbours] = None, tries: int = 20) -> tuple[list[Record], int]:
    """n records never seen before and not within one word of `too_close`, drawn uniformly from the
    generator's domain (in batches, until there are n or `tries` batches brought nothing new) or
    from the pool; and how many draws the one-word filter refused."""
    out, seen, near = [], set(known), 0

    def take(source: list[Record]) -> int:
        nonlocal near
        added = 0
        for r in source:
            key = key_of(r)
            if key in seen or len(out) >= n:
                continue
            seen.add(key)
            if too_close is not None and key in too_close:
                near += 1
                continue
            out.append(r)
            added += 1
        return added

    if gen is None:
        source = list(pool)
        rng.shuffle(source)
        take(source)
        return out, near
    misses = 0
    while len(out) < n and misses < tries:
        misses = 0 if take(gen.sample(4 * n, rng)) else misses + 1
    return out, near


def _sha(records: list[Record]) -> str:
    return hashlib.sha256("\n".join(sorted(key_of(r) for r in records)).encode()).hexdigest()


def _train_arm(cfg, lin, folder: Path, gid: str, seed: int, rnd: int, parent: str, data: list[Record],
               replay_pool: list[Record], steps: int, progress) -> tuple[str, dict]:
    """One child of `parent` on `data` + replay, on Ray Train; stored in models/, not registered."""

    train_part, val = split(data, cfg.data.val_fraction)
    if not val:  # too few records for the hash split: hold out two
        train_part, val = data[:-2], data[-2:]
    mix = build_mix(train_part, replay_pool, cfg.train.replay_k, cfg.data.curriculum, cfg.train.seed + 1000 * seed + rnd)
    write_records(folder / "mix.parquet", mix.records)
    write_records(folder / "val.parquet", val)
    worker = worker_config(cfg, lin, gid, parent_sha=parent, steps=steps, label=gid, seed=cfg.train.seed + seed,
                           checkpoint_every=min(cfg.train.checkpoint_every, steps),
                           mix_path=uri_of(folder / "mix.parquet"), val_path=uri_of(folder / "val.parquet"))
    progress(f"{gid}: training on {mix.n_delta} records + {mix.n_replay} replayed, {steps} steps")
    out = run_training(worker, cfg.train, lin.ray_storage(), f"{cfg.name}-{gid}-{int(time.time())}", folder / "best")
    meta = training_meta(out, worker, cfg, "", gid)
    meta.update(experiment=NAME, seed=seed, round=rnd)
    child = lin.models.put_adapter(out.best_dir, parent, meta)
    return child, {"replayed": mix.n_replay, "best_val_loss": out.best_metrics["val_loss"],
                   "train_seconds": out.wall_seconds}


def start_prompts(lin, start: str) -> set[str]:
    """Every prompt the start model's line was trained or tested on: the deltas of each link of its
    chain (generation 0's corpus included) and every correction. Deltas of generations after it are
    not its data: they may be drawn, as any unseen example of the domain may."""
    keys: set[str] = set()
    for link in lin.models.chain(start):
        sha = lin.models.meta(link).get("data_delta_sha")
        if sha:
            keys |= {key_of(r) for r in lin.data.get(sha)}
    return keys | {normalize(c.prompt) for c in CorrectionStore(lin.root).all()}


def _sets(gen, folder: Path, seed: int, eval_file: Optional[str], probe_file: Optional[str], eval_size: int,
          probe_size: int, known: set[str]) -> tuple[list[Record], list[Record]]:
    """The replication's evaluation and probe sets: read back when it has begun already, else drawn
    (or read from the given files), disjoint from each other and from `known`."""
    ev_path, pr_path = folder / "eval.jsonl", folder / "probe.jsonl"
    if ev_path.exists() and pr_path.exists():
        return ingest_jsonl(ev_path).records, ingest_jsonl(pr_path).records
    rng = random.Random(f"sets-{seed}")
    if eval_file:
        evals = ingest_jsonl(eval_file).records
    else:
        evals, _ = random_records(gen, [], eval_size, known, rng)
        if len(evals) < eval_size:
            raise TargetedError(f"the domain has only {len(evals)} unseen examples for an evaluation set of {eval_size}; "
                                "lower --eval-size")
    taken = known | {key_of(r) for r in evals}
    if probe_file:
        given = ingest_jsonl(probe_file).records
        probes = [r for r in given if key_of(r) not in taken]
        if not probes:
            raise TargetedError(f"{probe_file}: every probe is in the evaluation set or the lineage's data; the probe set "
                                "must be disjoint from both")
    else:
        probes, _ = random_records(gen, [], probe_size, taken, rng)
        if not probes:
            raise TargetedError("no unseen examples are left for the probe set; lower --eval-size")
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(ev_path, evals)
    write_jsonl(pr_path, probes)
    return evals, probes


def run_experiment(cfg, lin, start: str, rounds: int, seeds: int, steps: Optional[int], seed: int, progress,
                   eval_file: Optional[str] = None, probe_file: Optional[str] = None, pool: list[Record] = (),
                   eval_size: int = 40, probe_size: int = 120, fresh: bool = False,
                   min_records: int = 16) -> Experiment:
    """`seeds` replications of `rounds` rounds each. A replication stops early when the targeted
    filter keeps fewer than `min_records` records (a full round of steps on a handful of records
    overfits both lines: measured) or the targeted line has no weak area left on the probe set."""
    import ray

    gen = load_generator(cfg.targeted.generator, cfg.targeted.generator_options)
    if gen is None and not pool:
        raise TargetedError("the random arm needs the domain's generator (targeted.generator) or --pool FILE")
    if gen is None and not (eval_file and probe_file):
        raise TargetedError("without a domain generator (targeted.generator), give the evaluation set (--data FILE) "
                            "and the probe set (--probe FILE)")
    steps = steps or cfg.train.steps
    how = cfg.healing.weak_area
    path = lin.root / "experiments" / f"{NAME}.json"
    settings = {"start": start, "rounds": rounds, "steps": steps, "seed": seed,
                "eval": eval_file or f"{eval_size} drawn per seed", "probe": probe_file or f"{probe_size} drawn per seed",
                "train_lr": cfg.train.lr, "replay_k": cfg.train.replay_k, "weak_threshold": cfg.healing.weak_threshold,
                "weak_share": cfg.healing.weak_share, "weak_area": how, "generator": cfg.targeted.generator,
                "pool": len(pool)}
    exp = None
    if path.exists() and not fresh:
        raw = read_json(path)
        if "replications" not in raw:
            raise TargetedError(f"{path} holds an experiment written by an older evo (one seed, areas chosen per arm); "
                                "pass --fresh to replace it")
        exp = Experiment.from_json(raw)
        if exp.settings != settings:
            raise TargetedError(f"{path} holds an experiment with other settings; pass --fresh to replace it")
    exp = exp or Experiment(settings, [], [], time.strftime("%Y-%m-%dT%H:%M:%S"))
    exp.finished = ""
    eval_task = ray.remote(num_cpus=1)(metrics)
    replay_base = lin.ancestry(start, cfg.data.val_fraction, cfg.data.test_fraction).pool
    args = (cfg.model.dtype, cfg.model.max_length, cfg.eval.max_new_tokens)
    base = lin.root / "experiments" / NAME
    line_known = start_prompts(lin, start)

    def save() -> None:
        exp.summary = summarize(exp.replications)
        atomic_write_json(path, exp.to_json())

    for s in range(seed, seed + seeds):
        rep = next((r for r in exp.replications if r.seed == s), None)
        if rep is not None and rep.finished:
            continue
        folder = base / f"seed-{s}"
        evals, probes = _sets(gen, folder, s, eval_file, probe_file, eval_size, probe_size, line_known)
        near = WordNeighbours(key_of(r) for r in evals)

        def measure(shas: list[str], areas: list[str], evals: list[Record] = evals) -> list[dict[str, Score]]:
            got = ray.get([eval_task.remote(lin.location, x, evals, areas, how, *args) for x in shas])
            return [{k: Score(**v) for k, v in g.items()} for g in got]

        weak = None
        if rep is None:
            progress(f"seed {s}: weak areas of the start model {start[:12]} on {len(probes)} probes "
                     f"({len(evals)} evaluation examples, kept apart)")
            weak = analyse(lin, cfg, records=probes, sha=start)
            areas = weak.report.area_names
            (start_scores,) = measure([start], areas)
            rep = Replication(s, str(folder / "eval.jsonl"), str(folder / "probe.jsonl"), len(evals), len(probes),
                              _sha(evals), areas, start_scores["areas"].n, start_scores)
            exp.replications.append(rep)
            exp.replications.sort(key=lambda r: r.seed)
            if not areas:
                rep.note = f"no weak area above perplexity {cfg.healing.weak_threshold:g} on the probe set"
                rep.finished = True
                save()
                progress(f"seed {s}: {rep.note}; nothing to compare")
                continue
            save()
        for rnd in range(len(rep.rounds) + 1, rounds + 1):
            prev = rep.rounds[-1] if rep.rounds else None
            parents = {"targeted": prev.targeted.child if prev else start, "random": prev.random.child if prev else start}
            earlier = {a: [Record(**row) for x in rep.rounds for row in getattr(x, a).data_rows] for a in ARMS}
            if weak is None:
                progress(f"seed {s} round {rnd}/{rounds}: weak areas of the targeted line's model {parents['targeted'][:12]}")
                weak = analyse(lin, cfg, records=probes, sha=parents["targeted"])
            aimed = weak.report.area_names
            if not aimed:
                rep.note = f"round {rnd}: the targeted line has no weak area left on the probe set; stopped"
                break
            exclude = evals + probes + earlier["targeted"] + earlier["random"]
            known = line_known | {key_of(r) for r in exclude}
            targeted = targeted_for(lin, cfg, weak, seed=1000 * s + rnd, too_close=near.__contains__, known=known)
            weak = None  # frees the model before training
            if len(targeted.records) < min_records:
                rep.note = (f"round {rnd}: the filter kept {len(targeted.records)} targeted record(s), fewer than "
                            f"{min_records}; stopped (the weak areas are nearly exhausted)")
                break
            n = len(targeted.records)
            known |= {key_of(r) for r in targeted.records}
            randoms, random_near = random_records(gen, list(pool), n, known, random.Random(f"random-{s}-{rnd}"), near)
            if len(randoms) < n:
                raise TargetedError(f"seed {s} round {rnd}: only {len(randoms)} unseen records for the random arm, {n} "
                                    "needed (none may be within one word of an evaluation prompt); lower --eval-size")
            progress(f"seed {s} round {rnd}: {n} targeted records over {len(targeted.report.kept_by_area)} areas, "
                     f"{n} random ones")
            data = {"targeted": targeted.records, "random": randoms}
            dropped = {"targeted": targeted.report.dropped.get(NEAR_EVAL, 0), "random": random_near}
            before = measure([parents["targeted"], parents["random"]], rep.areas)
            arms = {}
            for arm, b in zip(ARMS, before):
                gid = f"exp-{NAME}-s{s}-r{rnd}-{arm}"
                data_path = write_jsonl(folder / f"round-{rnd}-{arm}.jsonl", data[arm])
                child, info = _train_arm(cfg, lin, folder / f"round-{rnd}-{arm}", gid, s, rnd, parents[arm], data[arm],
                                         replay_base + earlier[arm], steps, progress)
                arms[arm] = dict(parent=parents[arm], child=child, records=n, near_eval_dropped=dropped[arm],
                                 data=str(data_path), data_rows=[r.to_row() for r in data[arm]], before=b, **info)
            after = measure([arms["targeted"]["child"], arms["random"]["child"]], rep.areas)
            row = Round(rnd, aimed, targeted.report.to_json(), Arm(**arms["targeted"], after=after[0]),
                        Arm(**arms["random"], after=after[1]))
            rep.rounds.append(row)
            save()
            progress(f"seed {s} round {rnd}: " + line(rep, row))
        rep.finished = True
        save()
    exp.finished = time.strftime("%Y-%m-%dT%H:%M:%S")
    save()
    return exp


def _f(x: Optional[float], signed: bool = True) -> str:
    return "n/a" if x is None else (f"{x:+.3f}" if signed else f"{x:.3f}")


def line(rep: Replication, row: Round) -> str:
    t, r = row.targeted.after, row.random.after
    return (f"accuracy on the {len(rep.areas)} fixed areas ({rep.area_items} items) targeted "
            f"{_f(t['areas'].accuracy, False)} vs random {_f(r['areas'].accuracy, False)} (start "
            f"{_f(rep.start['areas'].accuracy, False)}); overall {_f(t['overall'].accuracy, False)} vs "
            f"{_f(r['overall'].accuracy, False)}")


def show_interval(i: Interval) -> str:
    if i.mean is None:
        return "n/a"
    if i.low is None:
        return f"{i.mean:+.3f} (one seed: no interval)"
    return f"{i.mean:+.3f} (95% CI {i.low:+.3f} to {i.high:+.3f}, {i.n} seeds)"
