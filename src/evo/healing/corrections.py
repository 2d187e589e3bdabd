"""Human corrections: a prompt, the wrong output, the corrected output, a pattern id and a reason.

Kept append-only in `corrections.jsonl` in the lineage root, one JSON object per line, each with a
content id (so the same correction recorded twice is kept once). Every correction recorded before a
generation starts joins that generation's training mix whole: corrections are never split into a
holdout and never left to replay sampling.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from evo.atomic import locked, sha256_bytes
from evo.config import ConfigError
from evo.data.ingest import IngestError, Problem
from evo.data.records import Record
from evo.data.store import question_key, questions
from evo.storage import after_write, open_root, resolve

PATTERN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
FIELDS = ("prompt", "wrong", "corrected", "pattern", "reason")


class CorrectionError(ValueError):
    """A correction that cannot be recorded; the message names the field and why."""


@dataclass(frozen=True)
class Correction:
    prompt: str
    wrong: str
    corrected: str
    pattern: str
    reason: str = ""

    @property
    def cid(self) -> str:
        body = json.dumps([self.prompt, self.wrong, self.corrected, self.pattern], ensure_ascii=False)
        return sha256_bytes(body.encode("utf-8"))[:16]

    def record(self) -> Record:
        """The training example it becomes: the prompt with the corrected output."""
        return Record("completion", self.prompt, self.corrected, category=f"correction:{self.pattern}", rid=self.cid)


def corrected_answers(corrections: list[Correction]) -> dict[str, Correction]:
    """Normalized question -> the correction in force for it (the latest recorded). A correction's
    question retires every other record that asks it: from training mixes (replay pools, the delta,
    self-replay), and in the parts that are scored or seed targeted data it is asked with the
    corrected answer (`retire_scored`)."""
    return {question_key(c.prompt): c for c in corrections}


def retire_scored(records: list[Record], corrected: dict[str, Correction]) -> tuple[list[Record], list[dict]]:
    """A scored part with corrected questions retired: a record whose question (its last, for a chat)
    a correction answers is scored against the corrected answer from now on; a chat that asks a
    corrected question in an earlier turn (its context states the error) is dropped. Returns the part
    and what was retired: {"prompt", "was", "now"} ("now" is "" for a dropped chat)."""
    if not corrected:
        return list(records), []
    out, retired = [], []
    for r in records:
        asked = questions(r)
        c = corrected.get(asked[-1])
        if c is not None:
            if normalize_answer(r.completion) != normalize_answer(c.corrected):
                retired.append({"prompt": asked[-1], "was": r.completion.strip(), "now": c.corrected.strip()})
                r = _with_answer(r, c.corrected)
            out.append(r)
        elif any(q in corrected for q in asked[:-1]):
            retired.append({"prompt": asked[-1], "was": r.completion.strip(), "now": ""})
        else:
            out.append(r)
    return out, retired


def normalize_answer(text: str) -> str:
    return " ".join(text.split())


def _with_answer(r: Record, answer: str) -> Record:
    chat = r.chat()
    if chat is None or chat[-1]["role"] != "assistant":  # a completion, or a preference (its prompt ends on the user)
        return replace(r, completion=answer)
    chat[-1] = {**chat[-1], "content": answer.strip()}
    return replace(r, completion=" " + answer.strip(), messages=json.dumps(chat, ensure_ascii=False))


def parse_correction(obj: object) -> Correction:
    """A JSON object as a Correction; `completion` is accepted for `corrected`."""
    if not isinstance(obj, dict):
        raise CorrectionError(f"a correction must be a JSON object, got {type(obj).__name__}")
    obj = dict(obj)
    if "corrected" not in obj and "completion" in obj:
        obj["corrected"] = obj.pop("completion")
    unknown = sorted(set(obj) - set(FIELDS) - {"id", "recorded_at"})
    if unknown:
        raise CorrectionError(f"unknown field(s) {unknown}; a correction has {list(FIELDS)}")
    for name in ("prompt", "corrected", "pattern"):
        if not isinstance(obj.get(name), str) or not obj[name].strip():
            raise CorrectionError(f"'{name}' must be a non-empty string")
    for name in ("wrong", "reason"):
        if not isinstance(obj.get(name, ""), str):
            raise CorrectionError(f"'{name}' must be a string")
    if not PATTERN_ID.match(obj["pattern"]):
        raise CorrectionError(f"'pattern' {obj['pattern']!r} must be letters, digits and _.:- (at most 100)")
    if obj.get("wrong", "") == obj["corrected"]:
        raise CorrectionError("'corrected' is the same as 'wrong': nothing to correct")
    return Correction(obj["prompt"], obj.get("wrong", ""), obj["corrected"], obj["pattern"], obj.get("reason", ""))


def read_corrections_file(path: str | Path) -> list[Correction]:
    """Every line of a JSONL file of corrections, or an IngestError listing each bad line."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    out, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(parse_correction(json.loads(line)))
        except json.JSONDecodeError as e:
            problems.append(Problem(str(path), n, f"not valid JSON ({e.msg} at column {e.colno})"))
        except CorrectionError as e:
            problems.append(Problem(str(path), n, str(e)))
    if problems:
        raise IngestError(f"{path}: {len(problems)} bad line(s), nothing recorded:\n"
                          + "\n".join(f"  {p}" for p in problems[:20]))
    return out


class CorrectionStore:
    def __init__(self, root: str | Path):
        self.path = resolve(root) / "corrections.jsonl"

    def all(self) -> list[Correction]:
        """Every recorded correction, oldest first (a line cut short by a crash is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(parse_correction(json.loads(line)))
            except (json.JSONDecodeError, CorrectionError):
                continue
        return out

    def add(self, corrections: list[Correction]) -> list[Correction]:
        """Append the ones not already recorded (all or nothing); returns those added."""
        with locked(self.path):
            known = {c.cid for c in self.all()}
            new, seen = [], set()
            for c in corrections:
                if c.cid not in known and c.cid not in seen:
                    new.append(c)
                    seen.add(c.cid)
            if new:
                stamp = time.time()
                lines = "".join(json.dumps({"id": c.cid, **asdict(c), "recorded_at": stamp}, ensure_ascii=False) + "\n"
                                for c in new)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(lines)
                    f.flush()
                    os.fsync(f.fileno())

                after_write(self.path)  # a URI root: the whole file, replaced
        return new

    def patterns(self) -> dict[str, list[Correction]]:
        out: dict[str, list[Correction]] = {}
        for c in self.all():
            out.setdefault(c.pattern, []).append(c)
        return out


def cmd_correct(root: str, file: str | None, prompt: str | None, wrong: str | None, corrected: str | None,
                pattern: str | None, reason: str | None) -> int:
    """`evo correct`: a file of corrections (all or none), or one given by its fields."""
    if file:
        if any([prompt, wrong, corrected, pattern]):
            raise ConfigError("give either --file or --prompt/--wrong/--corrected/--pattern, not both")
        items = read_corrections_file(file)
    else:
        try:
            items = [parse_correction({"prompt": prompt or "", "wrong": wrong or "", "corrected": corrected or "",
                                       "pattern": pattern or "", "reason": reason or ""})]
        except CorrectionError as e:
            raise IngestError(f"correction: {e}") from None
    store = CorrectionStore(open_root(root))
    added = store.add(items)
    print(f"{store.path}: {len(added)} correction(s) recorded, {len(items) - len(added)} already there; "
          f"{len(store.all())} in all, over {len(store.patterns())} pattern(s). They join the next generation's data.")
    return 0
