"""Building a generation's eval suite from its lineage, and running it on Ray, a task per model."""

from __future__ import annotations

import math
import random
import sys
from statistics import NormalDist
from typing import Optional

import ray

from evo.config import EvoConfig
from evo.data.records import Record
from evo.data.store import questions, read_records
from evo.evals.general import GeneralSpec, read_prompts, read_questions, vocabulary
from evo.evals.suite import EvalSpec, SuiteResult, evaluate_generation, load_probes
from evo.gate import GenerationScores, base_flags
from evo.healing.corrections import CorrectionStore
from evo.healing.validators import PatternRule, healing_items, read_paraphrases
from evo.lineage.root import Lineage
from evo.progress import Progress
from evo.ray_waits import cleaned_up, get


def eval_spec(cfg: EvoConfig, qa: dict[str, list[Record]], holdout: list[Record], val: list[Record],
              lin: Optional[Lineage] = None) -> EvalSpec:
    """What every model of a generation is scored on. With `lin`: what is reported (the style probes
    `eval.probes`, every past correction, eval.general); without: what chooses (a sweep's trials), whose
    style probes are `eval.val_probes`, never the reported ones."""
    e, h = cfg.eval, cfg.healing
    items, excluded = [], []
    if lin is not None:
        items, excluded = healing_items(CorrectionStore(lin.root).all(), read_paraphrases(h.paraphrases),
                                        h.max_items_per_pattern, seen_prompts(lin))
    rules = {p: PatternRule(tuple(r.forbid), tuple(r.require), r.check) for p, r in h.patterns.items()}
    available = sum(len(recs[:e.max_items] if e.max_items else recs) for recs in qa.values())  # as the eval reads
    qa = recall_sample(qa, recall_budget(cfg), e.max_items)
    return EvalSpec(qa, holdout, load_probes(e.probes if lin is not None else e.val_probes), e.banned_phrases, val,
                    e.max_new_tokens, e.batch_size, e.max_items, cfg.model.max_length, items, rules,
                    [i.prompt for i in excluded], general_spec(cfg, lin) if lin is not None else None, available)


def recall_budget(cfg: EvoConfig) -> Optional[int]:
    """How many recall items make the interval eval.recall_halfwidth states (None: every item): the n at
    which the two-sided normal interval at gate.drift_confidence on a rate of 0.5, its widest, is
    +-recall_halfwidth. 385 at 0.05 and 0.95."""
    h = cfg.eval.recall_halfwidth
    if h is None:
        return None
    z = NormalDist().inv_cdf((1 + cfg.gate.drift_confidence) / 2)
    return math.ceil(z * z * 0.25 / (h * h))


def recall_sample(parts: dict[str, list[Record]], n: Optional[int], cap: Optional[int] = None) -> dict[str, list[Record]]:
    """At most `n` items over the generations' parts, stratified: each part (first cut to `cap` items,
    as the eval reads it) gives a share in proportion to its size (largest remainders), drawn with a
    seed of its own generation and size, so the child and the model it is compared with are asked the
    same items, and a generation scored again is asked them again. Every item when there are no more
    than `n`. Proportional and nothing more, so that recall, the pooled mean over the sample, estimates
    the line's recall without weights: a minimum per part would over-ask small parts (a part far
    smaller than its share of one item may go unasked)."""
    parts = {g: recs[:cap] if cap else list(recs) for g, recs in parts.items()}
    total = sum(len(recs) for recs in parts.values())
    if n is None or total <= n:
        return parts
    live = [g for g, recs in parts.items() if recs]
    exact = {g: n * len(parts[g]) / total for g in live}
    share = {g: int(exact.get(g, 0)) for g in parts}
    order = sorted(live, key=lambda g: (int(exact[g]) - exact[g], g))  # largest remainder first
    for g in order[: n - sum(share.values())]:
        share[g] += 1
    out = {}
    for g, recs in parts.items():
        picks = sorted(random.Random(f"recall:{g}:{len(recs)}").sample(range(len(recs)), min(share[g], len(recs))))
        out[g] = [recs[i] for i in picks]
    return out


def general_spec(cfg: EvoConfig, lin: Lineage) -> Optional[GeneralSpec]:
    """eval.general's sets, the base (generation 0) to compare with, and the lineage's own words.
    Only with a lineage: what is reported, never what chooses (a sweep's trials, a checkpoint)."""
    g = cfg.eval.general
    base = lin.registry.by_gen("gen-0")
    if g is None or base is None:
        return None
    return GeneralSpec(base, read_questions(g.questions), read_prompts(g.open_prompts), domain_words(lin),
                       g.language, g.max_new_tokens)


def domain_words(lin: Lineage) -> frozenset[str]:
    """Every word of every delta in the lineage and of its corrections: invented names are not fake words."""
    shas = {r["data_delta_sha"] for r in lin.ledger.rows() if r["data_delta_sha"]}
    shas |= {p.stem for p in lin.data.dir.glob("*.parquet")}
    records = [r for sha in sorted(shas) for r in lin.data.get(sha)] + [c.record() for c in CorrectionStore(lin.root).all()]
    return vocabulary(f"{r.prompt} {r.completion} {r.messages}" for r in records)


def seen_prompts(lin: Lineage) -> frozenset[str]:
    """The questions (`evo.data.store.questions`: every user turn of a chat, by the split's key) of every
    training mix (runs/<gen>/mix*.parquet) and every selection set (runs/<gen>/val.parquet: checkpoints
    and sweep winners are chosen on it) the lineage has written: a healing item must be one nothing was
    trained or chosen on. Under split v3 the demo's gen-2 val part held 2 of its 16 paraphrases, which
    were asked and reported before."""
    paths = sorted((lin.root / "runs").glob("*/mix*.parquet")) + sorted((lin.root / "runs").glob("*/val.parquet"))
    return frozenset(q for path in paths for r in read_records(path) for q in questions(r))


def say_to(progress: Optional[Progress], where: str = "ray"):
    """Where a watchdog's message goes: the caller's progress lines, else stderr."""
    if progress is not None:
        return lambda message: progress(where, message)
    return lambda message: print(f"evo: {where}: {message}", file=sys.stderr, flush=True)


def evaluate_many(lin: Lineage, shas: list[str], spec: EvalSpec, cfg: EvoConfig,
                  progress: Optional[Progress] = None) -> list[SuiteResult]:
    """Each model evaluated in its own Ray task (in parallel where there are CPUs or GPUs), under the
    watchdog (`cfg.ray`): tasks that Ray cannot place fail the step with what they wait for."""
    gpus = 1 if cfg.train.use_gpu else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(evaluate_generation)
    say = say_to(progress, "evals")
    with cleaned_up(say):
        return get([task.remote(lin.location, s, spec, cfg.model.dtype) for s in shas],
                   f"the eval tasks of {len(shas)} model(s) ({1} CPU{f', {gpus} GPU' if gpus else ''} each)",
                   cfg.ray, say)


def scores_of(child: SuiteResult, parent: SuiteResult, recurred: tuple = ()) -> GenerationScores:
    """The child's scores beside its parent's, with the n of each rate (the gate's noise allowance)."""
    c, p = child.general, parent.general
    general = {} if c is None else {
        "general_accuracy": c.accuracy, "kl_to_base": c.kl_to_base, "fake_words": c.fake_word_share,
        "distinct2": c.distinct2, "repetition": c.repetition, "general_counted": c.counted, "words": c.words,
        "bigrams": c.bigrams, "trigrams": c.trigrams}
    if c is not None and p is not None:
        general |= {"parent_general_accuracy": p.accuracy, "parent_kl_to_base": p.kl_to_base,
                    "parent_fake_words": p.fake_word_share, "parent_distinct2": p.distinct2,
                    "parent_repetition": p.repetition, "parent_words": p.words, "parent_bigrams": p.bigrams,
                    "parent_trigrams": p.trigrams}
    return GenerationScores(child.recall, child.generalization.value, child.style_drift.hits,
                            parent.generalization.value, parent.style_drift.hits, tuple(recurred),
                            style_probes=child.style_drift.total or None, parent_recall=parent.recall,
                            recall_items=sum(a.total for a in child.recall_by_gen.values()) or None,
                            **paired_recall(child, parent), **general)


def paired_recall(child: SuiteResult, parent: SuiteResult) -> dict:
    """{recall_lost, recall_gained}: of the recall items both were asked, those the parent answered right
    and the child wrong, and the other way; {} where the two were not asked the same items or a miss
    list is missing."""
    c, p = child.recall_by_gen, parent.recall_by_gen
    if not c or c.keys() != p.keys() or any(c[g].total != p[g].total or c[g].missed is None or p[g].missed is None
                                            for g in c):
        return {}
    cm = {(g, k) for g in c for k in c[g].missed}
    pm = {(g, k) for g in p for k in p[g].missed}
    return {"recall_lost": len(cm - pm), "recall_gained": len(pm - cm)}


def base_flags_of(cfg: EvoConfig, base: SuiteResult) -> list[str]:
    """The gate's absolute thresholds that generation 0 fails on its own evals (`evo.gate.base_flags`)."""
    return base_flags(scores_of(base, base), cfg.gate)
