"""Targeted vs random data: does training on a model's weak areas beat as much data drawn at random?

One replication (a "seed") runs like this, from one start model:

1. Two sets are drawn from the domain, disjoint from each other and from every prompt the start
   model's line was trained or tested on (`start_prompts`): the evaluation set (scores only) and the
   probe set (diagnosis only). With `--data` the
   evaluation set is that file, the same in every seed, less any prompt of the line (`unseen`: the
   rule a drawn set follows); with `--probe` the probe set likewise.
2. The areas compared are fixed before round 1: the start model's weak areas on the probe set.
   Both lines are scored on the evaluation items of those areas and on the whole evaluation set.
3. Round after round, two lines are trained side by side from the start model:
   - targeted: `evo targeted`'s data for the targeted line's current weak areas on the probe set;
   - random: as many records drawn uniformly (the domain generator's `sample`, or `--pool`).
   No record of either line is a near-copy of an evaluation prompt (`evo.nearcopy`: the same words
   up to order, or one word changed, added or removed), nor repeats the start line's data, the probe
   set or an earlier round: the same filter for both lines, and how many candidates each lost to the
   evaluation filter is kept.
   Each child is built as every generation's child is (`evo.train.child.build_child`), with the same
   settings for both lines (its data plus a replay sample of the start model's line and of its own
   line's earlier rounds), and scored on the evaluation set. Both lines hold out as many of their
   records for validation (`arm_holdout`), so they train on as many. Answers are scored whole: each
   may run to its reference's length, as the gate's are (`evo.evals.suite.answer_budget`). What is the experiment's own: the two
   data arms (`_Run.draw`), the scores on the evaluation set, and the results file.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import ray

from evo.answers import normalize
from evo.atomic import atomic_write_json, read_json
from evo.config import ConfigError, EvoConfig, saved_config
from evo.curation.targeted import (
    NEAR_EVAL,
    DomainGenerator,
    TargetedError,
    TargetedReport,
    key_of,
    load_generator,
    targeted_for,
    write_jsonl,
)
from evo.curation.weak import WeakAnalysis, analyse, area_of, model_of, score_examples
from evo.data.ingest import ingest_jsonl
from evo.data.mix import ReplayMix, build_mix
from evo.data.records import Record
from evo.evals.suite import answer_budget
from evo.healing.corrections import CorrectionStore
from evo.lineage.root import Lineage
from evo.model.generate import greedy
from evo.model.lineage_model import load_generation
from evo.nearcopy import NearIndex
from evo.progress import Silent
from evo.ray_start import start_ray
from evo.storage import location
from evo.train.child import build_child

NAME = "targeted_vs_random"
Say = Callable[[str], None]  # the experiment's progress: one line at a time
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
    near_eval_dropped: int  # candidates this line lost to the near-copy filter
    replayed: int
    best_val_loss: float
    train_seconds: float
    data: str  # the JSONL of its records
    data_rows: list[dict]
    before: dict[str, Score]  # its parent, on SUBSETS
    after: dict[str, Score]
    held_out: int = 0  # of its records, the validation holdout (checkpoint choice): as many for both lines


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
    return score_records(model, tok, records, areas, how, max_length, max_new_tokens)


def score_records(model, tok, records: list[Record], areas: list[str], how: str, max_length: int,
                  max_new_tokens: int) -> dict[str, dict]:
    """`metrics` on a model in hand. Each answer may run to its reference's length (at least
    `max_new_tokens`), as the gate's exact match does: one cut short could never match."""
    losses = [math.log(s.perplexity) for s in score_examples(model, tok, records, max_length)]
    budget = answer_budget(tok, [r.completion for r in records], max_new_tokens)
    answers = greedy(model, tok, [r.prompt for r in records], budget, 64)
    right = [normalize(a) == normalize(r.completion) for a, r in zip(answers, records)]

    def summary(idx: list[int]) -> dict:
        if not idx:
            return {"n": 0, "loss": None, "accuracy": None}
        return {"n": len(idx), "loss": sum(losses[i] for i in idx) / len(idx),
                "accuracy": sum(right[i] for i in idx) / len(idx)}

    keep = set(areas)
    return {"areas": summary([i for i, r in enumerate(records) if area_of(r, how) in keep]),
            "overall": summary(list(range(len(records)))), "budget": budget}


def random_records(gen, pool: list[Record], n: int, known: set[str], rng: random.Random,
                   too_close: Optional[NearIndex] = None, tries: int = 20) -> tuple[list[Record], int]:
    """n records never seen before and no near-copy of one in `too_close` (`evo.nearcopy`), drawn
    uniformly from the generator's domain (in batches, until there are n or `tries` batches brought
    nothing new) or from the pool; and how many draws the near-copy filter refused."""
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


def arm_holdout(data: list[Record], val_fraction: float) -> tuple[list[Record], list[Record]]:
    """(train, val): the `val_fraction` of `data` with the lowest content hashes held out, at least two,
    the count a function of len(data) only. Both arms have as many records, so they train on as
    many (a hash split by fraction would hold out a different count of each)."""
    k = min(len(data) - 1, max(2, round(val_fraction * len(data))))
    val = set(sorted(data, key=lambda r: r.sha)[:k])
    return [r for r in data if r not in val], [r for r in data if r in val]


def _arm_mix(cfg: EvoConfig, data: list[Record], replay_pool: list[Record], seed: int,
             rnd: int) -> tuple[ReplayMix, list[Record]]:
    """An arm's training mix (its data's train part + a replay sample of `replay_pool`) and its val records."""
    train_part, val = arm_holdout(data, cfg.data.val_fraction)
    mix = build_mix(train_part, replay_pool, cfg.train.replay_k, cfg.data.curriculum, cfg.train.seed + 1000 * seed + rnd)
    return mix, val


def _train_arm(cfg: EvoConfig, lin: Lineage, folder: Path, gid: str, seed: int, rnd: int, parent: str,
               data: list[Record], replay_pool: list[Record], steps: int, progress: Say) -> tuple[str, dict]:
    """One child of `parent` on `data` + replay, built as every child is (`evo.train.child.build_child`);
    stored in models/, not registered."""
    mix, val = _arm_mix(cfg, data, replay_pool, seed, rnd)
    progress(f"{gid}: training on {mix.n_delta} records + {mix.n_replay} replayed, {steps} steps")
    child = build_child(cfg, lin, gid, parent, mix, val, Silent(), folder=folder,  # its one line is above
                        meta={"experiment": NAME, "seed": seed, "round": rnd},
                        name=f"{cfg.name}-{gid}-{int(time.time())}",  # a run of its own: never resume an older one
                        steps=steps, seed=cfg.train.seed + seed, checkpoint_every=min(cfg.train.checkpoint_every, steps))
    return child.sha, {"records": mix.n_delta, "held_out": len(val), "replayed": mix.n_replay,
                       "best_val_loss": child.out.best_metrics["val_loss"], "train_seconds": child.out.wall_seconds}


def start_prompts(lin, start: str) -> set[str]:
    """Every prompt the start model's line was trained or tested on: the deltas of each link of its
    chain (generation 0's corpus included) and every correction. Deltas of generations after it are
    not its data: they may be drawn, as any unseen example of the domain may. The same prompt, not
    near-copies (`evo.nearcopy`): the line's data is the domain's templates, so one word apart from
    it is what an unseen example of the domain is, and both arms start from the model that learned
    it; what the arms train on is what the near-copy filter keeps from the evaluation set."""
    keys: set[str] = set()
    for link in lin.models.chain(start):
        sha = lin.models.meta(link).get("data_delta_sha")
        if sha:
            keys |= {key_of(r) for r in lin.data.get(sha)}
    return keys | {normalize(c.prompt) for c in CorrectionStore(lin.root).all()}


def unseen(records: list[Record], known: set[str], path: str) -> list[Record]:
    """The records of a given evaluation file whose prompt the line has not trained or tested on
    (`known`, as `start_prompts` gives it): the same rule as a drawn set's. None left: refused."""
    kept = [r for r in records if key_of(r) not in known]
    if not kept:
        raise TargetedError(f"{path}: every one of its {len(records)} prompts is in the start model's line (trained or "
                            "tested on); an evaluation set must be unseen")
    return kept


def _sets(gen, folder: Path, seed: int, eval_file: Optional[str], probe_file: Optional[str], eval_size: int,
          probe_size: int, known: set[str]) -> tuple[list[Record], list[Record]]:
    """The replication's evaluation and probe sets: read back when it has begun already, else drawn
    (or read from the given files), disjoint from each other and from `known`."""
    ev_path, pr_path = folder / "eval.jsonl", folder / "probe.jsonl"
    if ev_path.exists() and pr_path.exists():
        return ingest_jsonl(ev_path).records, ingest_jsonl(pr_path).records
    rng = random.Random(f"sets-{seed}")
    if eval_file:
        evals = unseen(ingest_jsonl(eval_file).records, known, eval_file)
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


@dataclass(frozen=True)
class Sources:
    """Where a seed's evaluation and probe sets come from: the given files, else drawn at these sizes."""

    eval_file: Optional[str] = None
    probe_file: Optional[str] = None
    eval_size: int = 40
    probe_size: int = 120

    def check(self, gen: Optional[DomainGenerator], pool: list[Record]) -> None:
        """Refuse an experiment whose random arm or sets have nothing to come from."""
        if gen is None and not pool:
            raise TargetedError("the random arm needs the domain's generator (targeted.generator) or --pool FILE")
        if gen is None and not (self.eval_file and self.probe_file):
            raise TargetedError("without a domain generator (targeted.generator), give the evaluation set (--data FILE) "
                                "and the probe set (--probe FILE)")

    def sets(self, gen: Optional[DomainGenerator], folder: Path, seed: int,
             known: set[str]) -> tuple[list[Record], list[Record]]:
        """The seed's evaluation and probe sets (see `_sets`)."""
        return _sets(gen, folder, seed, self.eval_file, self.probe_file, self.eval_size, self.probe_size, known)


def _settings(cfg: EvoConfig, start: str, rounds: int, steps: int, seed: int, sources: Sources,
              pool: list[Record]) -> dict:
    """What makes two experiments the same one: a rerun with other settings is refused."""
    return {"start": start, "rounds": rounds, "steps": steps, "seed": seed,
            "eval": sources.eval_file or f"{sources.eval_size} drawn per seed",
            "probe": sources.probe_file or f"{sources.probe_size} drawn per seed",
            "train_lr": cfg.train.lr, "replay_k": cfg.train.replay_k, "weak_threshold": cfg.healing.weak_threshold,
            "weak_share": cfg.healing.weak_share, "weak_area": cfg.healing.weak_area, "generator": cfg.targeted.generator,
            "pool": len(pool)}


def _resume(path: Path, settings: dict, fresh: bool) -> Experiment:
    """The experiment at `path` to continue (the same settings only), or a new one."""
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
    return exp


@dataclass
class _Seed:
    """One replication under way: its record, its two sets, and the targeted line's latest diagnosis."""

    number: int
    rep: Optional[Replication]
    folder: Path
    evals: list[Record]
    probes: list[Record]
    near: NearIndex  # the evaluation prompts: neither arm gets a near-copy of one
    weak: Optional[WeakAnalysis] = None  # of the targeted line's current model, until its data is drawn


@dataclass
class _Drawn:
    """A round's two data arms, as many records each, and what the near-copy filter cost each."""

    report: TargetedReport  # the targeted arm's
    data: dict[str, list[Record]]  # arm -> its records
    dropped: dict[str, int]  # arm -> candidates lost to the near-copy filter


@dataclass
class _Run:
    """One `run_experiment` call: what its seeds share, and the steps a seed goes through."""

    cfg: EvoConfig
    lin: Lineage
    start: str
    rounds: int
    steps: int
    gen: Optional[DomainGenerator]  # the domain's generator; None: the pool and the given sets
    pool: list[Record]
    sources: Sources
    min_records: int
    progress: Say
    exp: Experiment

    def __post_init__(self) -> None:
        self.path = self.lin.root / "experiments" / f"{NAME}.json"
        self.eval_task = ray.remote(num_cpus=1)(metrics)
        self.replay_base = self.lin.ancestry(self.start, self.cfg.data.val_fraction, self.cfg.data.test_fraction).pool
        self.line_known = start_prompts(self.lin, self.start)

    def save(self) -> None:
        """The experiment as it stands, summary included, to experiments/targeted_vs_random.json."""
        self.exp.summary = summarize(self.exp.replications)
        atomic_write_json(self.path, self.exp.to_json())

    def measure(self, shas: list[str], areas: list[str], evals: list[Record]) -> list[dict[str, Score]]:
        """Each model's scores on `evals`, overall and on `areas`: a Ray task per model."""
        args = (self.cfg.healing.weak_area, self.cfg.model.dtype, self.cfg.model.max_length, self.cfg.eval.max_new_tokens)
        got = ray.get([self.eval_task.remote(self.lin.location, x, evals, areas, *args) for x in shas])
        return [{k: Score(**g[k]) for k in SUBSETS} for g in got]

    def replicate(self, s: int) -> None:
        """Seed `s` from where it stands to its last round (or the round it stops at)."""
        rep = next((r for r in self.exp.replications if r.seed == s), None)
        if rep is not None and rep.finished:
            return
        folder = self.lin.root / "experiments" / NAME / f"seed-{s}"
        evals, probes = self.sources.sets(self.gen, folder, s, self.line_known)
        seed = _Seed(s, rep, folder, evals, probes, NearIndex(key_of(r) for r in evals))
        if rep is None and not self.begin(seed):
            return
        for rnd in range(len(seed.rep.rounds) + 1, self.rounds + 1):
            if not self.play_round(seed, rnd):
                break
        seed.rep.finished = True
        self.save()

    def begin(self, seed: _Seed) -> bool:
        """A new replication: the areas compared, fixed now (the start model's weak areas on the probe
        set), and the start model's scores. False when it has no weak area: nothing to compare."""
        s = seed.number
        self.progress(f"seed {s}: weak areas of the start model {self.start[:12]} on {len(seed.probes)} probes "
                      f"({len(seed.evals)} evaluation examples, kept apart)")
        seed.weak = analyse(self.lin, self.cfg, records=seed.probes, sha=self.start)
        areas = seed.weak.report.area_names
        (start_scores,) = self.measure([self.start], areas, seed.evals)
        seed.rep = Replication(s, str(seed.folder / "eval.jsonl"), str(seed.folder / "probe.jsonl"), len(seed.evals),
                               len(seed.probes), _sha(seed.evals), areas, start_scores["areas"].n, start_scores)
        self.exp.replications.append(seed.rep)
        self.exp.replications.sort(key=lambda r: r.seed)
        if not areas:
            seed.rep.note = f"no weak area above perplexity {self.cfg.healing.weak_threshold:g} on the probe set"
            seed.rep.finished = True
            self.save()
            self.progress(f"seed {s}: {seed.rep.note}; nothing to compare")
            return False
        self.save()
        return True

    def play_round(self, seed: _Seed, rnd: int) -> bool:
        """Round `rnd`: both arms' data drawn, a child trained per line, both scored; saved. False when
        the seed stops here (the reason in its note)."""
        rep = seed.rep
        prev = rep.rounds[-1] if rep.rounds else None
        parents = {a: getattr(prev, a).child if prev else self.start for a in ARMS}
        earlier = {a: [Record(**row) for x in rep.rounds for row in getattr(x, a).data_rows] for a in ARMS}
        aimed = self.diagnose(seed, rnd, parents["targeted"])
        drawn = self.draw(seed, rnd, earlier) if aimed else None
        if drawn is None:
            return False
        before = self.measure([parents[a] for a in ARMS], rep.areas, seed.evals)
        arms = {a: self.train_arm(seed, rnd, a, parents[a], drawn, earlier[a], b) for a, b in zip(ARMS, before)}
        after = self.measure([arms[a]["child"] for a in ARMS], rep.areas, seed.evals)
        row = Round(rnd, aimed, drawn.report.to_json(), Arm(**arms["targeted"], after=after[0]),
                    Arm(**arms["random"], after=after[1]))
        rep.rounds.append(row)
        self.save()
        self.progress(f"seed {seed.number} round {rnd}: " + line(rep, row))
        return True

    def diagnose(self, seed: _Seed, rnd: int, sha: str) -> list[str]:
        """The targeted line's weak areas on the probe set (its model `sha`); none: the seed stops."""
        if seed.weak is None:
            self.progress(f"seed {seed.number} round {rnd}/{self.rounds}: weak areas of the targeted line's model "
                          f"{sha[:12]}")
            seed.weak = analyse(self.lin, self.cfg, records=seed.probes, sha=sha)
        aimed = seed.weak.report.area_names
        if not aimed:
            seed.rep.note = f"round {rnd}: the targeted line has no weak area left on the probe set; stopped"
        return aimed

    def draw(self, seed: _Seed, rnd: int, earlier: dict[str, list[Record]]) -> Optional[_Drawn]:
        """The round's two data arms: targeted data for the weak areas, then as many unseen random
        records. None when the targeted filter keeps fewer than `min_records` (the seed stops)."""
        s = seed.number
        known = self.line_known | {key_of(r) for r in seed.evals + seed.probes + earlier["targeted"] + earlier["random"]}
        targeted = targeted_for(self.lin, self.cfg, seed.weak, seed=1000 * s + rnd, too_close=seed.near.__contains__,
                                known=known)
        seed.weak = None  # frees the model before training
        n = len(targeted.records)
        if n < self.min_records:
            seed.rep.note = (f"round {rnd}: the filter kept {n} targeted record(s), fewer than {self.min_records}; "
                             "stopped (the weak areas are nearly exhausted)")
            return None
        known |= {key_of(r) for r in targeted.records}
        randoms, random_near = random_records(self.gen, list(self.pool), n, known, random.Random(f"random-{s}-{rnd}"),
                                              seed.near)
        if len(randoms) < n:
            raise TargetedError(f"seed {s} round {rnd}: only {len(randoms)} unseen records for the random arm, {n} "
                                "needed (none may be a near-copy of an evaluation prompt); lower --eval-size")
        self.progress(f"seed {s} round {rnd}: {n} targeted records over {len(targeted.report.kept_by_area)} areas, "
                      f"{n} random ones")
        return _Drawn(targeted.report, {"targeted": targeted.records, "random": randoms},
                      {"targeted": targeted.report.dropped.get(NEAR_EVAL, 0), "random": random_near})

    def train_arm(self, seed: _Seed, rnd: int, arm: str, parent: str, drawn: _Drawn, earlier: list[Record],
                  before: dict[str, Score]) -> dict:
        """One arm's child of the round, its data kept beside it; an `Arm` but for its scores after."""
        s, data = seed.number, drawn.data[arm]
        gid = f"exp-{NAME}-s{s}-r{rnd}-{arm}"
        data_path = write_jsonl(seed.folder / f"round-{rnd}-{arm}.jsonl", data)
        child, info = _train_arm(self.cfg, self.lin, seed.folder / f"round-{rnd}-{arm}", gid, s, rnd, parent, data,
                                 self.replay_base + earlier, self.steps, self.progress)
        return dict(parent=parent, child=child, near_eval_dropped=drawn.dropped[arm],
                    data=str(data_path), data_rows=[r.to_row() for r in data], before=before, **info)


def run_experiment(cfg: EvoConfig, lin: Lineage, start: str, rounds: int, seeds: int, steps: Optional[int], seed: int,
                   progress: Say, eval_file: Optional[str] = None, probe_file: Optional[str] = None,
                   pool: list[Record] = (), eval_size: int = 40, probe_size: int = 120, fresh: bool = False,
                   min_records: int = 16) -> Experiment:
    """`seeds` replications of `rounds` rounds each. A replication stops early when the targeted
    filter keeps fewer than `min_records` records (a full round of steps on a handful of records
    overfits both lines: measured) or the targeted line has no weak area left on the probe set."""
    gen = load_generator(cfg.targeted.generator, cfg.targeted.generator_options)
    sources = Sources(eval_file, probe_file, eval_size, probe_size)
    sources.check(gen, list(pool))
    steps = steps or cfg.train.steps
    path = lin.root / "experiments" / f"{NAME}.json"
    exp = _resume(path, _settings(cfg, start, rounds, steps, seed, sources, list(pool)), fresh)
    run = _Run(cfg, lin, start, rounds, steps, gen, list(pool), sources, min_records, progress, exp)
    for s in range(seed, seed + seeds):
        run.replicate(s)
    exp.finished = time.strftime("%Y-%m-%dT%H:%M:%S")
    run.save()
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


def cmd_experiment(root: str, sets: list[str] | None, gen: str | None, rounds: int, seeds: int, eval_size: int,
                   probe_size: int, data: str | None, probe: str | None, pool: str | None, steps: int | None, seed: int,
                   fresh: bool, min_records: int, address: str | None) -> int:
    """`evo experiment`: the inputs checked before Ray starts, then the seeds' rounds and each round's lead."""
    lin = Lineage(location(root))  # a URI: the Train workers and eval tasks open it themselves
    local = lin.root
    cfg = saved_config(local, sets or [])
    start = model_of(lin, gen)
    for f in (data, probe):
        if f:
            ingest_jsonl(f)  # a bad file fails here, before Ray starts
    pool_records = ingest_jsonl(pool).records if pool else []
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1 (3 or more for an interval worth reading)")
    if load_generator(cfg.targeted.generator, cfg.targeted.generator_options) is None and not (data and probe):
        raise TargetedError("give an evaluation set and a probe set (--data FILE --probe FILE) or a domain generator "
                            "(targeted.generator)")
    start_ray(address)
    print(f"targeted vs random from {start[:12]}: {seeds} seed(s) of {rounds} round(s)", flush=True)
    exp = run_experiment(cfg, lin, start, rounds, seeds, steps, seed,
                         lambda msg: print(f"experiment {msg}", flush=True), eval_file=data, probe_file=probe,
                         pool=pool_records, eval_size=eval_size, probe_size=probe_size, fresh=fresh,
                         min_records=min_records)
    for rep in exp.replications:
        if rep.note:
            print(f"seed {rep.seed}: {rep.note}")
    for r in exp.summary:
        print(f"round {r.round} ({r.seeds} seed(s), {r.records:.0f} records per line): targeted minus random, accuracy "
              f"on the fixed weak areas {show_interval(r.lead['areas']['accuracy'])}; overall "
              f"{show_interval(r.lead['overall']['accuracy'])}")
    print(f"wrote {local / 'experiments' / (NAME + '.json')}; `evo report --root {root}` shows it")
    return 0
