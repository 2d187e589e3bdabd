"""The eval suite: recall, generalization, style drift and perplexity, each a typed result."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from evo.answers import normalize
from evo.data.ingest import json_lines
from evo.data.records import Record, render_chat
from evo.evals.general import GeneralResult, GeneralSpec, run_general
from evo.healing.validators import HealItem, PatternResult, PatternRule, score_healing
from evo.model.generate import greedy
from evo.model.prompts import prompt_and_completion
from evo.train.examples import collate, encode, token_loss_sum


@dataclass
class Accuracy:
    """Exact match of greedy completions against the expected ones."""

    correct: int
    total: int
    misses: list[dict] = field(default_factory=list)  # a few, for the report
    by_category: dict[str, list[int]] = field(default_factory=dict)  # category -> [correct, total]
    # every missed item's key (`item_key`), so that two models asked the same items can be compared item by
    # item (the gate's paired recall test); None: not recorded
    missed: Optional[list[str]] = None

    @property
    def value(self) -> Optional[float]:
        """None when there was nothing to score (a user's base model with no base corpus)."""
        return self.correct / self.total if self.total else None


@dataclass
class StyleDrift:
    """How many probe replies contain a banned phrase (lower is better)."""

    hits: int
    total: int
    flagged: list[dict] = field(default_factory=list)


@dataclass
class SuiteResult:
    recall: Optional[float]  # over every earlier generation's QA set; None for generation 0
    recall_by_gen: dict[str, Accuracy]
    generalization: Accuracy
    style_drift: StyleDrift
    perplexity: Optional[float]
    healing: dict[str, PatternResult] = field(default_factory=dict)  # pattern -> violations on its items
    quality_by_category: dict[str, dict] = field(default_factory=dict)  # category -> exact match on every QA item
    healing_excluded: list[str] = field(default_factory=list)  # healing prompts not asked: trained or chosen on
    general: Optional[GeneralResult] = None  # eval.general: against the base, on sets no delta touches
    seconds: dict[str, float] = field(default_factory=dict)  # what the task spent: loading the models, scoring

    def to_json(self) -> dict:
        d = asdict(self)
        d["generalization"]["value"] = self.generalization.value
        return d


@dataclass
class EvalSpec:
    """What to score a model on; plain data so it ships to a Ray task."""

    qa_sets: dict[str, list[Record]]  # generation id -> its held-out part (recall): test, or val when choosing
    holdout: list[Record]  # the new delta's held-out part (generalization): test, or val when choosing
    probes: list[Record]  # style probes: prompts (no completion), rendered with the model's chat template
    banned_phrases: list[str]
    val: list[Record]  # perplexity (the test part when reporting)
    max_new_tokens: int = 24
    batch_size: int = 64
    max_items: int = 200
    max_length: int = 96
    healing: list[HealItem] = field(default_factory=list)  # past corrections and their paraphrases
    rules: dict[str, PatternRule] = field(default_factory=dict)  # pattern -> its validator rule
    healing_excluded: list[str] = field(default_factory=list)  # prompts left out: trained or chosen on in the lineage
    general: Optional[GeneralSpec] = None  # general ability, fake words, diversity (eval.general)
    qa_available: Optional[int] = None  # items the qa sets were sampled from (evo.evals.lineage_evals.recall_sample)


def answer_budget(tok, references: list[str], floor: int) -> int:
    """New tokens an exact-match item may generate: `floor` (eval.max_new_tokens), or enough for the
    longest reference and its end token where that is more. An answer cut off before its reference
    ends can never match: on the SmolLM2 demo, eval.max_new_tokens 24 cut every 25-28-token chat reply
    short, so chats scored 0 whatever the model said (found 2026-11-29)."""
    longest = max((len(tok(c, add_special_tokens=False)["input_ids"]) for c in references), default=0)
    return max(floor, longest + 2)


def accuracy(model, tok, records: list[Record], spec: EvalSpec) -> Accuracy:
    records = records[: spec.max_items]
    if not records:
        return Accuracy(0, 0)
    pairs = [prompt_and_completion(r, tok) for r in records]
    budget = answer_budget(tok, [c for _, c in pairs], spec.max_new_tokens)
    got = greedy(model, tok, [p for p, _ in pairs], budget, spec.batch_size)
    hits = [normalize(g) == normalize(c) for (_, c), g in zip(pairs, got)]
    misses = [{"prompt": p, "expected": c, "got": g} for (p, c), g, h in zip(pairs, got, hits) if not h]
    cats: dict[str, list[int]] = {}
    for r, h in zip(records, hits):
        c = cats.setdefault(r.category or "uncategorized", [0, 0])
        c[0], c[1] = c[0] + h, c[1] + 1
    missed = [item_key(p, c) for (p, c), h in zip(pairs, hits) if not h]
    return Accuracy(sum(hits), len(hits), misses[:5], cats, missed)


def item_key(prompt: str, completion: str) -> str:
    """A short key of one eval item (its rendered prompt and expected answer)."""
    return hashlib.sha256(f"{prompt}\x00{completion}".encode()).hexdigest()[:16]


def quality_by_category(results: list[Accuracy]) -> dict[str, dict]:
    """Exact match per record category, over every QA item asked (this delta's holdout and each
    earlier generation's QA set): where a generation got better or worse, by kind of data."""
    out: dict[str, list[int]] = {}
    for acc in results:
        for cat, (correct, total) in acc.by_category.items():
            c = out.setdefault(cat, [0, 0])
            c[0], c[1] = c[0] + correct, c[1] + total
    return {cat: {"correct": c, "total": t, "accuracy": c / t} for cat, (c, t) in sorted(out.items()) if t}


def style_drift(model, tok, spec: EvalSpec) -> StyleDrift:
    prompts = [prompt_and_completion(p, tok)[0] for p in spec.probes]
    replies = greedy(model, tok, prompts, spec.max_new_tokens, spec.batch_size)
    flagged = []
    for p, r in zip(prompts, replies):
        hit = next((b for b in spec.banned_phrases if b.lower() in r.lower()), None)
        if hit:
            flagged.append({"prompt": p, "reply": r, "phrase": hit})
    return StyleDrift(len(flagged), len(spec.probes), flagged)


@torch.no_grad()
def perplexity(model, tok, records: list[Record], spec: EvalSpec) -> Optional[float]:
    model.eval()
    total, count = 0.0, 0
    examples = [encode(r, tok, spec.max_length) for r in records[: spec.max_items]]
    for i in range(0, len(examples), spec.batch_size):
        batch = {k: v.to(model.device) for k, v in collate(examples[i : i + spec.batch_size], tok.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss, n = token_loss_sum(logits, batch["labels"])
        total, count = total + loss, count + n
    return math.exp(total / count) if count else None


def run_suite(model, tok, spec: EvalSpec, base=None) -> SuiteResult:
    """Every eval of `spec`; `base` (generation 0's model, or `model` itself when it is the base) for
    the general ones."""
    by_gen = {g: accuracy(model, tok, recs, spec) for g, recs in spec.qa_sets.items()}
    total = sum(a.total for a in by_gen.values())
    recall = sum(a.correct for a in by_gen.values()) / total if total else None
    holdout = accuracy(model, tok, spec.holdout, spec)
    return SuiteResult(recall, by_gen, holdout, style_drift(model, tok, spec), perplexity(model, tok, spec.val, spec),
                       healing(model, tok, spec), quality_by_category([holdout, *by_gen.values()]),
                       list(spec.healing_excluded),
                       run_general(model, base, tok, spec.general, spec.batch_size) if spec.general else None)


def healing(model, tok, spec: EvalSpec) -> dict[str, PatternResult]:
    """Every past correction's prompt (and its paraphrases) asked again, judged by the pattern's rule."""
    if not spec.healing:
        return {}
    prompts = [prompt_and_completion(Record("completion", i.prompt, ""), tok)[0] for i in spec.healing]
    outputs = greedy(model, tok, prompts, spec.max_new_tokens, spec.batch_size)
    return score_healing(spec.healing, outputs, spec.rules)


def evaluate_generation(root: str, sha: str, spec: EvalSpec, dtype: str = "float32") -> SuiteResult:
    """Load model `sha` from the lineage root (verified) and run the suite: a Ray task body.

    Runs on the task's GPU when Ray gave it one, else on one CPU thread.
    """
    from evo.model.lineage_model import load_generation  # transformers and peft: only where a model loads

    t0 = time.perf_counter()
    model, tok = load_generation(root, sha, dtype)
    base = model
    if spec.general is not None and spec.general.base_sha != sha:
        base = load_generation(root, spec.general.base_sha, dtype)[0]
    if torch.cuda.is_available():
        model, base = model.to("cuda"), base.to("cuda")
    else:
        torch.set_num_threads(1)
    t1 = time.perf_counter()
    result = run_suite(model, tok, spec, base)
    result.seconds = {"load": t1 - t0, "score": time.perf_counter() - t1}
    return result


def load_probes(path: str | Path | None) -> list[Record]:
    """Probes from JSONL: {"prompt": ...} or {"messages": [...]} ending on a user turn."""
    if path is None:
        return []

    probes = []
    for n, obj in json_lines(path):
        if isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
            probes.append(Record("completion", obj["prompt"], ""))
        elif isinstance(obj, dict) and isinstance(obj.get("messages"), list):
            # an empty assistant turn closes the conversation, so the last turn is the one to answer
            msgs = obj["messages"] + [{"role": "assistant", "content": ""}]
            probes.append(Record("chat", render_chat(msgs)[0], "", json.dumps(msgs, ensure_ascii=False)))
        else:
            raise ValueError(f"{path}:{n}: a probe needs 'prompt' (string) or 'messages' (list)")
    return probes
