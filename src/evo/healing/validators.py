"""Does an output repeat a corrected error? Rule validators per pattern, and the self-healing items.

A pattern's rule can forbid or require regexes in any output, or name a Python check registered
with `@register_check("name")` (a function of prompt and output that returns True on a violation).
With no rule, an answer violates its pattern when it differs from the known correct output, or,
where none is known, when it repeats the wrong output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from evo.answers import normalize
from evo.data.ingest import json_lines
from evo.data.store import question_key

Check = Callable[[str, str], bool]
CHECKS: dict[str, Check] = {}


def register_check(name: str) -> Callable[[Check], Check]:
    def wrap(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return wrap


@dataclass(frozen=True)
class PatternRule:
    forbid: tuple[str, ...] = ()
    require: tuple[str, ...] = ()
    check: Optional[str] = None


@dataclass(frozen=True)
class HealItem:
    pattern: str
    prompt: str
    expected: str = ""  # the correct output, where known
    wrong: str = ""  # the output that was corrected, where known
    source: str = "correction"  # or "paraphrase"


def violation(item: HealItem, output: str, rule: Optional[PatternRule] = None) -> Optional[str]:
    """Why `output` repeats the pattern's error, or None when it does not."""
    rule = rule or PatternRule()
    if rule.check:
        if rule.check not in CHECKS:
            raise KeyError(f"pattern {item.pattern}: no check named {rule.check!r} is registered")
        if CHECKS[rule.check](item.prompt, output):
            return f"fails check {rule.check}"
    for rx in rule.forbid:
        if re.search(rx, output):
            return f"matches forbidden /{rx}/"
    for rx in rule.require:
        if not re.search(rx, output):
            return f"misses required /{rx}/"
    if item.expected:
        return None if normalize(output) == normalize(item.expected) else "differs from the corrected output"
    if item.wrong and normalize(output) == normalize(item.wrong):
        return "repeats the wrong output"
    return None


def read_paraphrases(path: str | Path | None) -> list[HealItem]:
    """JSONL of {"pattern", "prompt", "expected"?, "wrong"?}: other ways of asking what a correction
    fixed; `wrong` is the answer that would repeat the corrected error (so a parent's wrong answers
    can be told apart: the error itself, or something it never learned)."""
    if path is None:
        return []

    out = []
    for n, obj in json_lines(path):
        if not (isinstance(obj, dict) and isinstance(obj.get("pattern"), str) and isinstance(obj.get("prompt"), str)):
            raise ValueError(f"{path}:{n}: a paraphrase needs 'pattern' and 'prompt' (strings)")
        out.append(HealItem(obj["pattern"], obj["prompt"], obj.get("expected", ""), obj.get("wrong", ""), "paraphrase"))
    return out


def healing_items(corrections, paraphrases: list[HealItem], per_pattern: int,
                  trained: frozenset[str] = frozenset()) -> tuple[list[HealItem], list[HealItem]]:
    """(asked, excluded): every past correction's own prompt, then its pattern's paraphrases, at most
    `per_pattern` each, leaving out any prompt whose question is in `trained` (the questions the
    lineage's training mixes and selection sets ask, by the split's key: `evo.data.store.questions`,
    every user turn, case, spacing and end punctuation folded): an answer to a question trained with
    its right answer shows memory, not healing. A correction's own prompt joins every later mix, so it
    is asked only until it has been trained. The same question, not near-copies (`evo.nearcopy`): a
    paraphrase is a rewording of a corrected prompt by design, which is what it measures."""
    items: dict[str, list[HealItem]] = {}
    excluded: list[HealItem] = []
    for c in corrections:
        items.setdefault(c.pattern, []).append(HealItem(c.pattern, c.prompt, c.corrected, c.wrong))
    for p in paraphrases:
        if p.pattern in items:  # paraphrases of patterns nobody corrected yet are not asked
            items[p.pattern].append(p)
    asked = []
    for group in items.values():
        fresh = [i for i in group if question_key(i.prompt) not in trained]
        excluded += [i for i in group if question_key(i.prompt) in trained]
        asked += fresh[:per_pattern]
    return asked, excluded


@dataclass
class PatternResult:
    violations: int
    total: int
    examples: list[dict] = field(default_factory=list)
    repeats_error: int = 0  # violations that are the corrected error itself (its rule, or its wrong answer)
    other_wrong: int = 0  # violations that are some other wrong answer (e.g. a word never learned)

    @property
    def healed(self) -> bool:
        return self.total > 0 and self.violations == 0


def score_healing(items: list[HealItem], outputs: list[str], rules: dict[str, PatternRule]) -> dict[str, PatternResult]:
    out: dict[str, PatternResult] = {}
    for item, got in zip(items, outputs):
        res = out.setdefault(item.pattern, PatternResult(0, 0))
        res.total += 1
        why = violation(item, got, rules.get(item.pattern))
        if why:
            res.violations += 1
            if why == "differs from the corrected output" and not (item.wrong and normalize(got) == normalize(item.wrong)):
                res.other_wrong += 1
            else:
                res.repeats_error += 1
            if len(res.examples) < 3:
                res.examples.append({"prompt": item.prompt, "got": got, "why": why, "source": item.source})
    return out


def healed_and_recurred(child: dict[str, dict], history: list[dict[str, dict]]) -> tuple[list[str], list[str]]:
    """Patterns the child has healed (no violation), and those that were healed on an earlier
    generation of its line and whose corrected error itself is back (`repeats_error`; another wrong
    answer is a regression the other evals catch, not a recurrence). Results as stored in
    evals/<gen>.json; files written before the split count every violation."""
    healed = sorted(p for p, r in child.items() if r["total"] and not r["violations"])
    before = {p for h in history for p, r in h.items() if r["total"] and not r["violations"]}
    recurred = sorted(p for p, r in child.items() if p in before and r.get("repeats_error", r["violations"]))
    return healed, recurred
