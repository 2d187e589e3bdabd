"""`evo feedback export ROUND`: what people preferred in an A/B round, as a preference delta.

The pairs come from three places:
- each side-by-side vote with a winner: the winner's answer over the loser's (a tie or "both bad"
  gives none; a vote is on the answers the server stored beside its pair, `answers` events);
- thumbs in the round: every answer given a thumbs-up over every different answer given a
  thumbs-down to the same rendered prompt (a prompt with thumbs one way only gives none);
- every correction (`evo correct`) with a recorded wrong answer: the corrected one over it.

The same rendered prompt with the same two answers counts once, and two pairs that prefer opposite
answers to one prompt are both left out (the raters disagree). A pair whose prompt is in a test part
of any delta of the lineage, or among the gate's style probes (the automated A/B judge asks those
when it has no generator), is left out: a prompt kept apart for judging is never trained on. A pair
whose prompt a tenant key asked (the server logs the asker) is that tenant's data: left out, unless an
admin names the tenant (`--tenant KEY_ID`, repeatable), a decision the summary records.

It writes a JSONL file in TRL's preference form (`prompt`, `chosen`, `rejected`: a conversation's
prompt as messages and each answer as one assistant message, a plain prompt as strings), which
`evo run` ingests as a delta like any other (add it to the config's `data.generations`), and beside it
`<name>.summary.json`: what was used, and every item left out with its reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from evo.ab.feedback import FeedbackStore, round_of
from evo.ab.tally import prompt_key
from evo.atomic import atomic_write_json, atomic_write_text
from evo.config import ConfigError, saved_config
from evo.data.records import render_chat, same_answer
from evo.data.store import DataStore
from evo.healing.corrections import CorrectionStore
from evo.lineage.ledger import Ledger
from evo.nearcopy import THRESHOLD, SameQuestion, apart_from, questions
from evo.storage import open_root

SOURCES = ("vote", "thumbs", "correction")


@dataclass(frozen=True)
class Pair:
    source: str  # vote, thumbs or correction
    ref: str  # the pair id, the two response ids, or the correction id
    prompt: object  # a list of messages ending in a user turn, or a plain prompt string
    chosen: str
    rejected: str
    category: str = ""

    def rendered(self) -> str:
        """The prompt as a chat record's prompt is rendered (`render_chat`), or the plain prompt."""
        if isinstance(self.prompt, str):
            return self.prompt
        return render_chat(list(self.prompt) + [{"role": "assistant", "content": ""}])[0]

    def line(self) -> dict:
        """One line of TRL's preference form."""
        if isinstance(self.prompt, str):
            body = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        else:
            body = {"prompt": list(self.prompt), "chosen": [{"role": "assistant", "content": self.chosen}],
                    "rejected": [{"role": "assistant", "content": self.rejected}]}
        return {**body, "category": self.category, "id": f"{self.source}:{self.ref}"}


@dataclass
class Export:
    round: str
    pairs: list[Pair] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"source", "ref", "reason"}
    checked: dict = field(default_factory=dict)  # what the prompts were checked against

    def skip(self, source: str, ref: str, reason: str) -> None:
        self.skipped.append({"source": source, "ref": ref, "reason": reason})

    def summary(self, out: Optional[Path]) -> dict:
        reasons: dict[str, int] = {}
        for s in self.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        return {"round": self.round, "file": str(out) if out else None, "pairs": len(self.pairs),
                "used": {src: sum(p.source == src for p in self.pairs) for src in SOURCES},
                "skipped": dict(sorted(reasons.items())), "checked_against": self.checked,
                "pairs_used": [{"source": p.source, "ref": p.ref} for p in self.pairs],
                "items_skipped": self.skipped, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _prompt_of(model_input: object) -> object:
    """What a request gave the model (`{"messages": [...]}` or `{"prompt": "..."}`) as a pair's
    prompt; None for anything else."""
    if not isinstance(model_input, dict):
        return None
    if isinstance(model_input.get("messages"), list):
        msgs = [{"role": {"developer": "system"}.get(m.get("role"), m.get("role")), "content": m.get("content")}
                for m in model_input["messages"] if isinstance(m, dict)]
        if msgs and all(isinstance(m["content"], str) for m in msgs) and msgs[-1]["role"] == "user":
            return msgs
        return None
    return model_input["prompt"] if isinstance(model_input.get("prompt"), str) else None


def asked(prompt: object) -> list[str]:
    """What a pair's prompt asks: a plain prompt; every user turn of a conversation (an earlier turn's
    question comes with the answer it was given)."""
    if isinstance(prompt, str):
        return [prompt]
    return [m["content"] for m in prompt if m.get("role") == "user"]


@dataclass
class Apart:
    """The prompts no pair may train on, by the one near-copy measure (`evo.nearcopy.apart_from`: the
    domain's question where its generator names one, else word-set overlap at `THRESHOLD`)."""

    index: object  # NearIndex or SameQuestion: `text in index`

    def __call__(self, prompt: object) -> bool:
        return any(q in self.index for q in asked(prompt))


def kept_apart(root: Path) -> tuple[Apart, dict]:
    """What no pair may train on: every question (any user turn) of every delta's test part, each delta
    divided as recorded when it was ingested (`DataStore.test_parts`; the root's run config's fractions
    only for a delta of an older root), and the config's style probes, by the near-copy measure; and
    what they were, for the summary. A root with deltas but no run config is refused: its test parts
    cannot be told."""
    deltas = sorted(DataStore(root).dir.glob("*.parquet"))
    try:
        cfg = saved_config(root)
    except ConfigError:
        if deltas:
            raise
        return Apart(apart_from([])), {"deltas": 0, "test_records": 0, "probes": 0}
    parts = DataStore(root).test_parts(Ledger(root).rows(), cfg.data.val_fraction, cfg.data.test_fraction, everything=True)
    tests = [r for part in parts for r in part]
    probes = []
    if cfg.eval.probes and Path(cfg.eval.probes).is_file():
        from evo.evals.suite import load_probes  # lazy: the eval suite imports torch, which nothing else here needs

        probes = load_probes(cfg.eval.probes)
    from evo.curation.targeted import load_generator  # lazy: curation imports torch, as the eval suite does

    generator = load_generator(cfg.targeted.generator, cfg.targeted.generator_options)
    index = apart_from([q for r in tests + probes for q in questions(r)], generator)
    measure = (f"the domain's question ({cfg.targeted.generator}), else near-copy" if isinstance(index, SameQuestion)
               else "near-copy")
    return Apart(index), {"deltas": len(deltas), "test_records": len(tests), "probes": len(probes),
                          "probes_file": cfg.eval.probes,
                          "measure": f"{measure} (evo.nearcopy, word-set overlap >= {THRESHOLD})"}


UNRECORDED = "unrecorded"  # --tenant unrecorded: prompts logged before the server recorded who asked


def _ever_keyed(root: Path) -> bool:
    """Whether the root has API keys, live or revoked (`evo.http.keys.KeyStore`'s file, read here
    without the server's floor)."""
    path = Path(root) / "service" / "keys.json"
    return path.exists() and bool(json.loads(path.read_text(encoding="utf-8")).get("keys"))


def _tenants_data(event: dict, tenants: frozenset[str]) -> str:
    """The reason an event's prompt is left out as a tenant's data, or "" (asked on the shared line, or
    by a tenant an admin named). An event without `asker` was logged before the server recorded it:
    fail closed, unless the root never had a key (one tenant) or the admin includes them."""
    if "asker" not in event:
        if UNRECORDED in tenants:
            return ""
        return ("asked before the server recorded who asked, on a root with API keys (an admin may include such "
                "prompts with --tenant unrecorded)")
    asker = event["asker"] or ""
    if not asker or asker in tenants:
        return ""
    return f"asked by tenant key {asker}: its data stays on its branch (an admin may name it with --tenant)"


def vote_pairs(events: list[dict], out: Export, tenants: frozenset[str] = frozenset()) -> list[Pair]:
    """One pair per side-by-side vote with a winner, on the answers stored beside its pair; none on a
    prompt a tenant asked, unless `tenants` names it."""
    shown = {e["pair_id"]: e for e in events if e["kind"] == "pair"}
    said = {e["pair_id"]: e for e in events if e["kind"] == "answers"}
    voted, pairs = set(), []
    for v in (e for e in events if e["kind"] == "pairwise"):
        pid = v["pair_id"]
        if pid in voted:  # the server refuses a second vote on a pair; an old log may have one
            continue
        voted.add(pid)
        if v["winner"] == "tie":
            out.skip("vote", pid, "both bad" if v.get("both_bad") else "tie")
            continue
        if pid not in shown or pid not in said:
            out.skip("vote", pid, "answers not recorded (shown before the server stored them)")
            continue
        if why := _tenants_data(said[pid], tenants):
            out.skip("vote", pid, why)
            continue
        prompt = _prompt_of(said[pid].get("input"))
        if prompt is None:
            out.skip("vote", pid, "prompt not usable (not ending in a user turn, or not text)")
            continue
        win_label = "a" if shown[pid]["a"] == v["winner"] else "b"
        chosen, rejected = said[pid][win_label], said[pid]["b" if win_label == "a" else "a"]
        pairs.append(Pair("vote", pid, prompt, chosen, rejected, "feedback:vote"))
    return pairs


def thumb_pairs(events: list[dict], out: Export, tenants: frozenset[str] = frozenset()) -> list[Pair]:
    """Every thumbed-up answer over every different thumbed-down answer to the same rendered
    prompt (a response's last thumbs count); none on a prompt a tenant asked, unless `tenants` names it."""
    responses = {e["response_id"]: e for e in events if e["kind"] == "response"}
    value: dict[str, str] = {}
    for e in events:
        if e["kind"] == "thumbs":
            value[e["response_id"]] = e["value"]
    groups: dict[str, dict] = {}
    for rid, v in value.items():
        resp = responses.get(rid)
        if resp is not None and (why := _tenants_data(resp, tenants)):
            out.skip("thumbs", rid, why)
            continue
        prompt = _prompt_of(resp.get("input")) if resp else None
        if resp is None or not isinstance(resp.get("text"), str) or prompt is None:
            out.skip("thumbs", rid, "answer not recorded (response not in this round's log, streamed, or logged "
                                    "before the server stored answers)")
            continue
        probe = Pair("thumbs", rid, prompt, resp["text"], "")
        g = groups.setdefault(prompt_key(probe.rendered()), {"prompt": prompt, "up": [], "down": []})
        g[v].append((rid, resp["text"]))
    pairs = []
    for g in groups.values():
        if not g["up"] or not g["down"]:
            for rid, _ in g["up"] + g["down"]:
                out.skip("thumbs", rid, "one-sided thumbs (no answer to the same prompt was rated the other way)")
            continue
        for up_id, up in g["up"]:
            for down_id, down in g["down"]:
                pairs.append(Pair("thumbs", f"{up_id}>{down_id}", g["prompt"], up, down, "feedback:thumbs"))
    return pairs


def correction_pairs(root: Path, out: Export) -> list[Pair]:
    """The corrected answer over the recorded wrong one, for every correction that has one."""
    pairs = []
    for c in CorrectionStore(root).all():
        if not c.wrong.strip():
            out.skip("correction", c.cid, "no wrong answer recorded")
            continue
        pairs.append(Pair("correction", c.cid, c.prompt, c.corrected, c.wrong, f"correction:{c.pattern}"))
    return pairs


def collect(root: Path, round_id: str, log: str = "live", corrections: bool = True,
            apart: Optional[Callable[[object], bool]] = None, tenants: tuple[str, ...] = ()) -> Export:
    """The pairs of round `round_id` of log `ab/<log>.jsonl` (and the corrections), with everything
    left out and why. `apart`: whether a prompt is kept apart (default: `kept_apart(root)`). `tenants`:
    the tenant keys whose prompts an admin lets onto the shared line (default: none)."""
    store = FeedbackStore(root, log)
    rounds = store.rounds()
    if round_id not in rounds:
        known = ", ".join(rounds) or "none"
        raise ConfigError(f"{store.path}: no round {round_id!r} (rounds with events: {known}; "
                          "GET /ab/rounds lists them)")
    events = [e for e in store.read().events if isinstance(e, dict) and round_of(e) == round_id and "kind" in e]
    out = Export(round_id)
    if apart is None:
        apart, out.checked = kept_apart(root)
    named = frozenset(tenants) | ({UNRECORDED} if not _ever_keyed(root) else set())  # never keyed: one tenant
    found = (vote_pairs(events, out, named) + thumb_pairs(events, out, named)
             + (correction_pairs(root, out) if corrections else []))
    out.checked["feedback_log"] = str(store.path)
    out.checked["tenants_included"] = sorted(named)  # an admin's decision, on record
    by_prompt: dict[tuple[str, str], list[Pair]] = {}  # (prompt, the two answers) -> pairs on them
    for p in found:
        if same_answer(p.chosen, p.rejected):
            out.skip(p.source, p.ref, "the two answers are the same")
        elif not p.chosen.strip() or not p.rejected.strip():
            out.skip(p.source, p.ref, "an empty answer")
        elif apart(p.prompt):
            out.skip(p.source, p.ref, "prompt kept apart (a test part or the style probes)")
        else:
            answers = "\x00".join(sorted(" ".join(a.split()) for a in (p.chosen, p.rejected)))
            by_prompt.setdefault((prompt_key(p.rendered()), answers), []).append(p)
    for group in by_prompt.values():
        first = group[0]
        if any(not same_answer(p.chosen, first.chosen) for p in group):
            for p in group:
                out.skip(p.source, p.ref, "contradicting preferences on the same prompt and answers")
            continue
        out.pairs.append(first)
        for p in group[1:]:
            out.skip(p.source, p.ref, f"duplicate of {first.source} {first.ref}")
    return out


def write_export(export: Export, path: Path) -> tuple[Optional[Path], Path]:
    """The JSONL (none when there are no pairs) and its summary beside it, atomically."""
    summary_path = path.with_name(path.name.removesuffix(".jsonl") + ".summary.json")
    written = None
    if export.pairs:
        atomic_write_text(path, "".join(json.dumps(p.line(), ensure_ascii=False) + "\n" for p in export.pairs))
        written = path
    atomic_write_json(summary_path, export.summary(written))
    return written, summary_path


def _same_export(summary_path: Path, new: dict) -> bool:
    """Whether the summary on disk describes the same export as `new` (its time aside)."""
    try:
        old = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return {k: v for k, v in old.items() if k != "written_at"} == {k: v for k, v in new.items() if k != "written_at"}


def export_rounds(root: Path, log: str = "live") -> list[tuple[str, Optional[Path], int]]:
    """What `evo serve --export-feedback-every` does each time: every round of `ab/<log>.jsonl`
    exported as `evo feedback export ROUND --no-corrections` would, to its default path
    (ROOT/feedback/<ROUND>.preference.jsonl and its summary), rewritten only when the export changed
    (new votes or thumbs; a prompt now kept apart). [(round, the file or None, pairs)] for the rounds
    written. The corrections are left out: each already trains the next generation as a correction,
    and in every round's file it would be one pair many times; tenants' prompts are left out (no admin
    decision is taken on a schedule)."""
    out: list[tuple[str, Optional[Path], int]] = []
    store = FeedbackStore(root, log)
    if not store.path.exists():
        return out
    apart, checked = kept_apart(root)  # once for every round of this pass
    for round_id in store.rounds():
        export = collect(root, round_id, log, corrections=False, apart=apart)
        export.checked = {**checked, **export.checked}
        path = root / "feedback" / f"{round_id}.preference.jsonl"
        summary_path = path.with_name(path.name.removesuffix(".jsonl") + ".summary.json")
        if _same_export(summary_path, export.summary(path if export.pairs else None)):
            continue
        if not export.pairs:
            path.unlink(missing_ok=True)  # an earlier export's pairs are no longer pairs to train on
        written, _ = write_export(export, path)
        out.append((round_id, written, len(export.pairs)))
    return out


def follow_feedback(root: Path, every_s: float, stop: threading.Event, say: Callable[[str], None],
                    log: str = "live") -> None:
    """Export the rounds every `every_s` seconds until `stop` is set (a thread of `evo serve`); a
    failed pass is reported through `say` and the next one tries again."""
    while not stop.wait(every_s):
        try:
            for round_id, written, n in export_rounds(root, log):
                say(f"feedback export: round {round_id}: " + (f"{n} preference pairs in {written}" if written
                                                              else "no preference pairs"))
        except Exception as e:  # a log being rotated, a full disk: say so, keep serving, try again
            say(f"feedback export failed ({type(e).__name__}: {e}); trying again in {every_s:g} s")


def cmd_feedback(root: str, action: str, round_id: str, log: str, out: Optional[str], no_corrections: bool,
                 tenant: Optional[list[str]] = None) -> int:
    """`evo feedback export ROUND`: the round's pairs as a preference JSONL, with a summary beside it."""
    local = open_root(root)
    export = collect(local, round_id, log, corrections=not no_corrections, tenants=tuple(tenant or ()))
    path = Path(out) if out else local / "feedback" / f"{round_id}.preference.jsonl"
    written, summary = write_export(export, path)
    s = export.summary(written)
    used = ", ".join(f"{n} from {src}s" for src, n in s["used"].items())
    left = ", ".join(f"{n} {why}" for why, n in s["skipped"].items()) or "none"
    if written is None:
        print(f"round {round_id}: no preference pairs (left out: {left}); nothing written but {summary}")
        return 1
    print(f"{written}: {len(export.pairs)} preference pairs ({used}); left out: {left}\n"
          f"summary: {summary}\nadd it to a config's data.generations to train on it (train.method: dpo)")
    return 0
