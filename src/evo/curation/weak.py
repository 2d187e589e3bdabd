"""Weak spots: examples ranked by the model's own perplexity on them, grouped into areas.

`evo weak` scores a generation (the champion by default) on every generation's val part, or on a
JSONL file, and reports the examples and areas above a perplexity threshold, with how many fall
above each of several thresholds so the threshold can be chosen from the numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from evo.atomic import atomic_write_json
from evo.config import ConfigError, saved_config
from evo.data.ingest import ingest_jsonl
from evo.data.records import Record
from evo.healing.corrections import CorrectionStore, corrected_answers, retire_scored
from evo.lineage.root import Lineage
from evo.model.lineage_model import load_generation
from evo.storage import open_root
from evo.train.examples import IGNORE, collate, encode


@dataclass
class Scored:
    record: Record
    perplexity: float  # exp of the mean next-token loss on the completion


def area_of(record: Record, how: str) -> str:
    """The area an example belongs to: its category, or `prefix:N`, the category and the first N words."""
    category = record.category or "uncategorized"
    if how == "category":
        return category
    if how.startswith("prefix:"):
        n = int(how.split(":", 1)[1])
        return f"{category}: " + " ".join(record.prompt.split()[:n])
    raise ValueError(f"unknown area grouping {how!r}: use 'category' or 'prefix:N'")


@torch.no_grad()
def score_examples(model, tok, records: list[Record], max_length: int, batch_size: int = 32) -> list[Scored]:
    """Per-example perplexity of the completion given the prompt (the training loss, one by one)."""
    model.eval()
    out: list[Scored] = []
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        batch = collate([encode(r, tok, max_length) for r in chunk], tok.pad_token_id)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        targets = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
        mask = (targets != IGNORE).float()
        per = (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
        out += [Scored(r, math.exp(min(float(x), 50.0))) for r, x in zip(chunk, per)]
    return out


@dataclass(frozen=True)
class Area:
    """One group of examples (see `area_of`) and how the model does on it."""

    area: str
    examples: int
    above: int  # examples above the report's perplexity threshold
    mean_perplexity: float
    max_perplexity: float


@dataclass
class WeakReport:
    """What `evo weak` writes to weak/<gen>.json and prints; `evo targeted` and the experiment read it."""

    examples: int  # examples scored
    threshold: float  # perplexity above which an example is weak
    area_grouping: str  # "category" or "prefix:N"
    weak_share: float  # an area is weak when at least this share of its examples is above the threshold
    above_threshold: list[tuple[float, int]]  # (threshold, examples above it), lowest threshold first
    weak_areas: list[Area]  # worst share above first
    worst: list[dict]  # the highest-perplexity examples: prompt, completion, category, perplexity
    gen_id: str = ""
    sha: str = ""
    source: str = ""  # what was scored: a file, or every generation's val part

    @property
    def area_names(self) -> list[str]:
        return [a.area for a in self.weak_areas]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> WeakReport:
        return cls(**{**raw, "above_threshold": [(float(t), int(n)) for t, n in raw["above_threshold"]],
                      "weak_areas": [Area(**a) for a in raw["weak_areas"]]})


def weak_report(scored: list[Scored], threshold: float, thresholds: list[float], area: str, top: int = 20,
                share: float = 0.5) -> WeakReport:
    """Areas where at least `share` of the examples are above `threshold` are weak (so a broad area
    with one bad example is not), worst share first."""
    ranked = sorted(scored, key=lambda s: s.perplexity, reverse=True)
    groups: dict[str, list[float]] = defaultdict(list)
    for s in scored:
        groups[area_of(s.record, area)].append(s.perplexity)
    areas = [Area(a, len(v), sum(p > threshold for p in v), sum(v) / len(v), max(v)) for a, v in groups.items()]
    weak = sorted((a for a in areas if a.above and a.above >= share * a.examples),
                  key=lambda a: (-a.above / a.examples, -a.mean_perplexity))
    return WeakReport(
        examples=len(scored), threshold=threshold, area_grouping=area, weak_share=share,
        above_threshold=[(t, sum(s.perplexity > t for s in scored)) for t in sorted(thresholds)],
        weak_areas=weak,
        worst=[{"prompt": s.record.prompt, "completion": s.record.completion, "category": s.record.category,
                "perplexity": s.perplexity} for s in ranked[:top]],
    )


@dataclass
class WeakAnalysis:
    sha: str
    gen_id: str
    records: list[Record]  # the set scored
    source: str
    model: object
    tok: object
    scored: list[Scored]
    report: WeakReport


def selection_records(lin, cfg) -> list[Record]:
    """Every generation's val part: never trained on, and not what any reported eval is measured on
    (so targeted data seeded from its weak spots does not leak into a test), each delta divided as
    recorded for it; a corrected question is asked with the corrected answer."""
    corrected = corrected_answers(CorrectionStore(lin.root).all())
    return retire_scored([r for row in lin.ledger.rows() if row["data_delta_sha"]
                          for r in lin.data.parts_of(row, cfg.data.val_fraction, cfg.data.test_fraction).val],
                         corrected)[0]


def model_of(lin, gen: str | None) -> str:
    """The sha of generation `gen`'s model, or of the champion when `gen` is None."""
    sha = lin.registry.by_gen(gen) if gen else lin.registry.alias("champion")
    if not sha:
        raise ConfigError(f"{lin.registry.path}: no model {'for ' + gen if gen else 'is the champion'}")
    return sha


def analyse(lin, cfg, gen: str | None = None, data: str | None = None, records: list[Record] | None = None,
            sha: str | None = None) -> WeakAnalysis:
    """Score a model (the champion, `gen`'s, or `sha`) on `records`, a JSONL file, or every
    generation's val part, and report its weak areas with the config's healing thresholds."""
    from transformers.utils import logging as hf_logging

    sha = sha or model_of(lin, gen)
    gid = (lin.registry.model(sha) or {}).get("gen_id") or sha[:12]
    if records is not None:
        source = f"{len(records)} given examples"
    elif data:
        records, source = ingest_jsonl(data).records, data
    else:
        records, source = selection_records(lin, cfg), "the val part of every generation"
    if not records:
        raise ConfigError(f"{source}: no examples to score")
    hf_logging.disable_progress_bar()
    h = cfg.healing
    model, tok = load_generation(str(lin.root), sha, cfg.model.dtype)
    scored = score_examples(model, tok, records, cfg.model.max_length)
    report = weak_report(scored, h.weak_threshold, h.weak_thresholds, h.weak_area, share=h.weak_share)
    report.gen_id, report.sha, report.source = gid, sha, source
    return WeakAnalysis(sha, gid, records, source, model, tok, scored, report)


# `evo weak` (and the start of `evo targeted`): score a generation on a set and print its weak areas.

def weak_analysis(root: Path, sets: list[str] | None, gen: str | None, data: str | None, threshold: float | None):
    """The saved run config (with overrides), the lineage at a local root, and the analysis of `gen`."""
    cfg, lin = saved_config(root, sets or []), Lineage(root)
    if threshold is not None:
        cfg.healing.weak_threshold = threshold
    return cfg, lin, analyse(lin, cfg, gen, data)


def print_weak(w: WeakAnalysis) -> None:
    r = w.report
    print(f"{w.gen_id} ({w.sha[:12]}) on {r.examples} examples from {w.source}")
    print("examples above each perplexity threshold: " + ", ".join(f">{t:g}: {n}" for t, n in r.above_threshold))
    print(f"weak areas (at least {r.weak_share:.0%} of their examples above perplexity {r.threshold:g}, "
          f"grouped by {r.area_grouping}):")
    for a in r.weak_areas[:15]:
        print(f"  {a.area}: {a.above}/{a.examples} above, mean perplexity {a.mean_perplexity:.2f}")
    if not r.weak_areas:
        print("  none")


def cmd_weak(root: str, sets: list[str] | None, gen: str | None, data: str | None, threshold: float | None) -> int:
    local = open_root(root)
    _, _, w = weak_analysis(local, sets, gen, data, threshold)
    out = local / "weak" / f"{w.gen_id}.json"
    atomic_write_json(out, w.report.to_json())
    print_weak(w)
    print(f"full report: {out}")
    return 0
