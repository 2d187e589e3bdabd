"""Targeted data: variations of the examples a model is weakest on, filtered, written as a delta.

Seeds are the highest-perplexity examples of the weak areas (`evo weak`). Each seed gets
variations from two sources:

- the model itself, sampling: the first part of the seed's prompt is kept and the model, at the
  configured temperature, writes the rest after a few other seed prompts of the area (one per
  line); its first line is cut to the seed prompt's word count. A model trained only on
  completions (the prompt masked out of the loss, as evo trains) may write no valid prompt at
  all; such candidates are dropped and counted, so the report shows it.
  Only prompt/completion records are varied this way (a chat turn cut in half is no prompt).
- the domain's own generator, when the config names one (`targeted.generator`, "module:factory"):
  an object with `variations(record, n, rng)`, `label(prompt)` and `sample(n, rng)`.

A prompt the model wrote is answered by the generator's `label` when there is a generator (None:
not a prompt of the domain, dropped); without one, by the model's own greedy answer, whose quality
is its mean token probability (self-training: weaker evidence, and scored as such).

Then the filter: exact duplicates (of each other, of all data the lineage already has, and of
the scored set) are dropped; so are near-copies (`evo.nearcopy`) of every prompt something is scored
on: the lineage's test parts, the healing paraphrases and eval.general's sets, or the set the caller
protects instead (the experiment's evaluation set); invalid records (empty, too long, a banned phrase) and
those below `min_quality`. The rest are ranked by quality x difficulty (the parent's own loss on
the candidate, relative to the hardest) and picked greedily, each pick's score discounted by its
similarity to what was already picked (character 3-gram Jaccard of the prompts); a candidate at or
above `near_duplicate` similarity to a pick is dropped. The top `keep_share` (at most
`max_records`) is kept.
"""

from __future__ import annotations

import importlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from evo.answers import normalize
from evo.atomic import atomic_write_json, atomic_write_text
from evo.config import ConfigError
from evo.curation.weak import Scored, WeakReport, area_of, print_weak, score_examples, weak_analysis
from evo.data.records import Record
from evo.evals.general import read_prompts, read_questions
from evo.healing.corrections import CorrectionStore
from evo.healing.validators import read_paraphrases
from evo.model.generate import Sampling, generate_batch, greedy
from evo.nearcopy import NearIndex, questions
from evo.numbers import show
from evo.storage import open_root


class DomainGenerator(Protocol):
    """The domain's own source of examples (e.g. a grammar, a simulator, a templated task)."""

    def variations(self, record: Record, n: int, rng: random.Random) -> list[Record]:
        """Up to n new examples near `record` (same area, different content)."""

    def label(self, prompt: str) -> Optional[str]:
        """The correct completion of `prompt`, or None when it is not a prompt of the domain."""

    def sample(self, n: int, rng: random.Random) -> list[Record]:
        """n examples drawn uniformly from the domain (the random arm of the experiment)."""

    # Optional: `score(prompt, answer) -> Optional[float]`, how right an answer is (1 right, 0 wrong;
    # None: not a prompt of the domain). The A/B round's judge uses it where a generator has it, and
    # exact match on `label` where not: a domain of natural-language answers states one fact in many
    # sentences, and only the fact should count.


class TargetedError(ConfigError):
    """Targeted data cannot be made as asked; the message says why and what to change."""


def load_generator(spec: Optional[str], options: dict[str, Any]) -> Optional[DomainGenerator]:
    """Import 'package.module:factory' and call it with `options`; None when no spec is given."""
    if not spec:
        return None
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise TargetedError(f"targeted.generator {spec!r}: cannot import it ({e})") from None
    try:
        gen = factory(**options)
    except TypeError as e:
        raise TargetedError(f"targeted.generator_options do not fit {spec}: {e}") from None
    missing = [m for m in ("variations", "label", "sample") if not callable(getattr(gen, m, None))]
    if missing:
        raise TargetedError(f"targeted.generator {spec}: the object it makes has no {', '.join(missing)}()")
    return gen


@dataclass
class Candidate:
    record: Record
    source: str  # "model" or "generator"
    seed_prompt: str
    area: str
    labelled_by: str  # "generator" or "model"
    quality: float = 1.0
    difficulty: float = 0.0  # the parent's mean next-token loss on it
    score: float = 0.0
    diversity: float = 1.0  # 1 - greatest similarity to an earlier pick, when picked
    dropped: str = ""  # why it was not kept ("" when kept)


def trigrams(text: str) -> frozenset[str]:
    t = f"  {normalize(text).lower()}  "
    return frozenset(t[i : i + 3] for i in range(len(t) - 2))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def record_json(r: Record) -> dict:
    """A record in the JSONL form `evo ingest` reads back to the same record."""
    out: dict[str, Any]
    if r.kind == "chat":
        out = {"messages": json.loads(r.messages)}
    elif r.kind == "text":
        out = {"text": r.completion}
    else:
        out = {"prompt": r.prompt, "completion": r.completion}
    if r.category:
        out["category"] = r.category
    return out


def seeds_of(scored: list[Scored], report: WeakReport, n: int) -> list[Scored]:
    """The n highest-perplexity examples above the threshold, in the report's weak areas."""
    areas = set(report.area_names)
    how, threshold = report.area_grouping, report.threshold
    weak = [s for s in scored if s.perplexity > threshold and area_of(s.record, how) in areas]
    return sorted(weak, key=lambda s: s.perplexity, reverse=True)[:n]


def model_variations(model, tok, seeds: list[Scored], how: str, n: int, temperature: float, top_p: float,
                     prefix_share: float, seed: int, shots: int = 3) -> list[Candidate]:
    """The model continues the first part of each seed's prompt, after up to `shots` other seed
    prompts of the same area, one per line (a few-shot context); the first line it writes, cut to
    the seed's word count, is the new prompt."""

    out: list[Candidate] = []
    todo = [s for s in seeds if s.record.kind == "completion" and len(s.record.prompt.split()) >= 2]
    by_area: dict[str, list[str]] = {}
    for s in todo:
        by_area.setdefault(area_of(s.record, how), []).append(s.record.prompt)
    for i in range(0, len(todo), 16):
        chunk = todo[i : i + 16]
        contexts, prefixes, words = [], [], []
        for s in chunk:
            w = s.record.prompt.split()
            keep = min(len(w) - 1, max(1, math.ceil(len(w) * prefix_share)))
            shown = [p for p in by_area[area_of(s.record, how)] if p != s.record.prompt][:shots]
            prefixes.append(" ".join(w[:keep]))
            contexts.append("".join(p + "\n" for p in shown) + prefixes[-1])
            words.append(len(w))
        room = max(8, 4 * max(words))  # tokens enough for the missing words
        outs = generate_batch(model, tok, contexts, Sampling(room, temperature, top_p, n, seed + i), ["\n"])
        for s, prefix, nw, choices in zip(chunk, prefixes, words, outs):
            for o in choices:
                w = (prefix + " " + o.text).split()
                if len(w) < nw:
                    continue
                out.append(Candidate(Record("completion", " ".join(w[:nw]), "", "", s.record.category),
                                     "model", s.record.prompt, area_of(s.record, how), ""))
    return out


def generator_variations(gen: DomainGenerator, seeds: list[Scored], how: str, n: int,
                         rng: random.Random) -> list[Candidate]:
    out = []
    for s in seeds:
        for r in gen.variations(s.record, n, rng)[:n]:
            out.append(Candidate(r, "generator", s.record.prompt, area_of(s.record, how), "generator"))
    return out


def label_candidates(cands: list[Candidate], gen: Optional[DomainGenerator], model, tok,
                     max_new_tokens: int) -> None:
    """Give the model's prompts their completions: the generator's, else the model's greedy one."""

    need = [c for c in cands if not c.record.completion]
    if gen is not None:
        for c in need:
            answer = gen.label(c.record.prompt)
            if answer is None:
                c.dropped = "not a prompt of the domain"
            else:
                c.record = Record("completion", c.record.prompt, answer, "", c.record.category)
                c.labelled_by = "generator"
        return
    answers = greedy(model, tok, [c.record.prompt for c in need], max_new_tokens, 32)
    for c, a in zip(need, answers):
        if not a.strip():
            c.dropped = "the model gave an empty answer"
        else:
            c.record = Record("completion", c.record.prompt, a, "", c.record.category)
            c.labelled_by = "model"


NEAR_EVAL = "a near-copy of a scored prompt"  # evo.nearcopy: an item some score is measured on


@dataclass
class Filter:
    keep_share: float
    max_records: int
    min_quality: float
    near_duplicate: float
    max_chars: int
    banned_phrases: list[str] = field(default_factory=list)
    too_close: Optional[Callable[[str], bool]] = None  # a near-copy of a scored prompt: never trained on


def _invalid(r: Record, f: Filter) -> str:
    if not r.completion.strip():
        return "empty completion"
    if r.n_chars() > f.max_chars:
        return f"longer than {f.max_chars} characters"
    low = r.completion.lower()
    for p in f.banned_phrases:
        if p.lower() in low:
            return f"contains the banned phrase {p!r}"
    return ""


def select(cands: list[Candidate], known_prompts: set[str], f: Filter) -> list[Candidate]:
    """Mark why each candidate is dropped; return the kept ones in pick order (scores already set)."""
    seen = set(known_prompts)
    passing: list[Candidate] = []
    for c in cands:
        if c.dropped:
            continue
        key = key_of(c.record)
        if key in seen:
            c.dropped = "duplicate"
            continue
        seen.add(key)
        if f.too_close is not None and f.too_close(key):
            c.dropped = NEAR_EVAL
            continue
        why = _invalid(c.record, f)
        if why:
            c.dropped = why
        elif c.quality < f.min_quality:
            c.dropped = f"quality {c.quality:.2f} below {f.min_quality}"
        else:
            passing.append(c)
    budget = min(f.max_records, math.ceil(f.keep_share * len(passing)))
    grams = [trigrams(c.record.prompt or c.record.completion) for c in passing]
    nearest = [0.0] * len(passing)  # greatest similarity to a pick so far
    left = set(range(len(passing)))
    picked: list[Candidate] = []
    while left and len(picked) < budget:
        i = max(left, key=lambda j: (passing[j].score * (1 - nearest[j]), -j))
        left.discard(i)
        if nearest[i] >= f.near_duplicate:
            passing[i].dropped = "near-duplicate of a kept one"
            continue
        passing[i].diversity = 1 - nearest[i]
        picked.append(passing[i])
        for j in left:
            nearest[j] = max(nearest[j], jaccard(grams[i], grams[j]))
    for j in left:
        passing[j].dropped = passing[j].dropped or "below the kept share"
    return picked


def score_candidates(cands: list[Candidate], model, tok, max_length: int) -> None:
    """difficulty: the parent's loss on each; quality of a model-labelled one: its mean token
    probability; score: quality x difficulty relative to the hardest candidate."""
    live = [c for c in cands if not c.dropped]
    if not live:
        return
    ppl = score_examples(model, tok, [c.record for c in live], max_length)
    for c, s in zip(live, ppl):
        c.difficulty = math.log(s.perplexity)
        if c.labelled_by == "model":
            c.quality = 1 / s.perplexity
    hardest = max(c.difficulty for c in live) or 1.0
    for c in live:
        c.score = c.quality * max(c.difficulty, 0.0) / hardest


@dataclass
class TargetedReport:
    """What `evo targeted` writes beside its JSONL (targeted/<gen>.json) and prints."""

    seeds: int  # weak examples the variations were made from
    weak_areas: list[str]
    candidates: int
    candidates_by_source: dict[str, int]  # "model" (sampled variations), "generator" (the domain's)
    dropped: dict[str, int]  # why candidates were dropped: duplicate, invalid, quality, ...
    kept: int
    kept_by_source: dict[str, int]
    kept_by_area: dict[str, int]
    kept_by_label: dict[str, int]  # who wrote the completion: the generator's rule or the model
    mean_quality: Optional[float]
    mean_difficulty: Optional[float]
    mean_diversity: Optional[float]
    generator: Optional[str]
    examples: list[dict]  # up to 10 kept records with their scores
    gen_id: str = ""
    sha: str = ""
    source: str = ""
    written: str = ""  # the JSONL written

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TargetedResult:
    records: list[Record]
    report: TargetedReport


def make_targeted(model, tok, scored: list[Scored], weak: WeakReport, gen: Optional[DomainGenerator], t,
                  f: Filter, known_prompts: set[str], max_length: int, max_new_tokens: int,
                  seed: int = 0) -> TargetedResult:
    """Variations of the weakest examples, filtered; `t` is the config's TargetedConfig."""
    seeds = seeds_of(scored, weak, t.seeds)
    if not seeds:
        above = ", ".join(f">{a:g}: {n}" for a, n in weak.above_threshold)
        raise TargetedError(f"no area has at least {weak.weak_share:.0%} of its examples above perplexity "
                            f"{weak.threshold:g}, so there is no weak area to target (examples above each "
                            f"threshold: {above}); lower healing.weak_threshold or healing.weak_share")
    how = weak.area_grouping
    rng = random.Random(seed)
    cands = model_variations(model, tok, seeds, how, t.model_variations, t.temperature, t.top_p,
                             t.prefix_share, seed) if t.model_variations else []
    if gen is not None and t.generator_variations:
        cands += generator_variations(gen, seeds, how, t.generator_variations, rng)
    label_candidates(cands, gen, model, tok, max_new_tokens)
    score_candidates(cands, model, tok, max_length)
    kept = select(cands, known_prompts, f)
    dropped: dict[str, int] = {}
    for c in cands:
        if c.dropped:
            reason = c.dropped.split(" ")[0] if c.dropped.startswith("quality") else c.dropped
            dropped[reason] = dropped.get(reason, 0) + 1
    def by(key, items) -> dict:
        return {k: sum(1 for c in items if key(c) == k) for k in sorted({key(c) for c in items})}

    report = TargetedReport(
        seeds=len(seeds), weak_areas=weak.area_names, candidates=len(cands),
        candidates_by_source=by(lambda c: c.source, cands), dropped=dropped, kept=len(kept),
        kept_by_source=by(lambda c: c.source, kept), kept_by_area=by(lambda c: c.area, kept),
        kept_by_label=by(lambda c: c.labelled_by, kept), mean_quality=_mean([c.quality for c in kept]),
        mean_difficulty=_mean([c.difficulty for c in kept]), mean_diversity=_mean([c.diversity for c in kept]),
        generator=getattr(t, "generator", None),
        examples=[{"prompt": c.record.prompt, "completion": c.record.completion, "source": c.source,
                   "area": c.area, "quality": round(c.quality, 3), "difficulty": round(c.difficulty, 3),
                   "diversity": round(c.diversity, 3)} for c in kept[:10]],
    )
    return TargetedResult([c.record for c in kept], report)


def _mean(xs: list[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def write_jsonl(path: str | Path, records: list[Record]) -> Path:
    path = Path(path)
    atomic_write_text(path, "".join(json.dumps(record_json(r), ensure_ascii=False) + "\n" for r in records))
    return path


def key_of(r: Record) -> str:
    """What makes two records the same example: the prompt with spacing folded, case kept (a text
    record's text). A repeat check only (targeted data never repeats a known prompt): what keeps it
    apart from scored prompts is the near-copy measure (`evo.nearcopy`, the filter's `too_close`),
    which folds case, punctuation and word order too."""
    return normalize(r.prompt) if r.kind != "text" else normalize(r.completion)


def known_prompts_of(records: list[Record]) -> set[str]:
    return {key_of(r) for r in records}


def known_prompts(lin, extra: list[Record] = ()) -> set[str]:
    """Normalized prompts (completions, for text records) of every delta in the lineage's data
    store, every correction and `extra`: targeted data must not repeat any of them."""
    records = [r for p in sorted(lin.data.dir.glob("*.parquet")) for r in lin.data.get(p.stem)] + list(extra)
    keys = known_prompts_of(records)
    return keys | {normalize(c.prompt) for c in CorrectionStore(lin.root).all()}


def scored_prompts(lin, cfg) -> list[str]:
    """Every prompt a score of the lineage is measured on: each generation's test part (the gate's
    generalization, later generations' recall), the healing paraphrases, eval.general's questions and
    open prompts. Targeted data keeps apart from all of them."""
    out: list[str] = []
    rows = [row for row in lin.ledger.rows() if row["GEN_ID"] != "gen-0"]
    for test in lin.data.test_parts(rows, cfg.data.val_fraction, cfg.data.test_fraction):  # as recorded at ingest
        out += [q for r in test for q in questions(r)]
    out += [p.prompt for p in read_paraphrases(cfg.healing.paraphrases)]
    g = cfg.eval.general
    if g is not None:
        out += [q.prompt for q in read_questions(g.questions)] + read_prompts(g.open_prompts)
    return out


def targeted_for(lin, cfg, weak, seed: int = 0, exclude: list[Record] = (),
                 too_close: Optional[Callable[[str], bool]] = None, known: Optional[set[str]] = None) -> TargetedResult:
    """Targeted data for the weak areas of `weak` (an evo.curation.weak.WeakAnalysis), per `cfg`,
    never repeating the scored set, `exclude` and the lineage's data (or, given, the `known` prompts
    instead), and with no near-copy of a scored prompt (`scored_prompts`, or the prompts for which the
    caller's `too_close` is true)."""
    t = cfg.targeted
    if too_close is None:
        too_close = NearIndex(scored_prompts(lin, cfg)).__contains__
    f = Filter(t.keep_share, t.max_records, t.min_quality, t.near_duplicate, cfg.data.max_chars,
               list(cfg.eval.banned_phrases), too_close)
    gen = load_generator(t.generator, t.generator_options)
    extra = list(weak.records) + list(exclude)
    keys = known_prompts(lin, extra) if known is None else set(known) | known_prompts_of(extra)
    return make_targeted(weak.model, weak.tok, weak.scored, weak.report, gen, t, f, keys,
                         cfg.model.max_length, cfg.eval.max_new_tokens, seed)


def cmd_targeted(root: str, sets: list[str] | None, gen: str | None, data: str | None, threshold: float | None,
                 out: str | None, seed: int) -> int:
    """`evo targeted`: the weak areas (as `evo weak` prints them), then targeted data for them, as a delta."""
    local = open_root(root)
    cfg, lin, w = weak_analysis(local, sets, gen, data, threshold)
    print_weak(w)
    print(f"making targeted variations of the {cfg.targeted.seeds} weakest examples "
          f"(model: {cfg.targeted.model_variations} each, generator {cfg.targeted.generator or '(none)'}: "
          f"{cfg.targeted.generator_variations} each)", flush=True)
    res = targeted_for(lin, cfg, w, seed=seed)
    path = Path(out) if out else local / "targeted" / f"{w.gen_id}.jsonl"
    write_jsonl(path, res.records)
    r = res.report
    r.gen_id, r.sha, r.source, r.written = w.gen_id, w.sha, w.source, str(path)
    atomic_write_json(path.with_suffix(".json"), r.to_json())

    def counts(d: dict) -> str:
        return ", ".join(f"{k}: {v}" for k, v in d.items())

    print(f"{r.candidates} candidates ({counts(r.candidates_by_source)}); dropped: {counts(r.dropped) or 'none'}")
    print(f"kept {r.kept} ({counts(r.kept_by_source)}) over {len(r.kept_by_area)} area(s); mean quality "
          f"{show(r.mean_quality)}, difficulty {show(r.mean_difficulty)}, diversity {show(r.mean_diversity)}")
    print(f"wrote {path} (report: {path.with_suffix('.json')})\n"
          f"train on it as the next delta: add it to data.generations in your config, then `evo run`")
    return 0
