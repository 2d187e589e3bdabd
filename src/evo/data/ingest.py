"""Read a JSONL file into validated records, reporting every bad line as file:line: reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from evo.data.records import Record, RecordError, parse_record

SHOWN_PROBLEMS = 20


class IngestError(ValueError):
    """A file that cannot be ingested as it is; the message lists the problems."""


@dataclass
class Problem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class IngestReport:
    path: str
    records: list[Record] = field(default_factory=list)
    invalid: list[Problem] = field(default_factory=list)
    duplicates: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.path}: {len(self.records)} records"]
        if self.invalid:
            parts.append(f"{len(self.invalid)} invalid skipped")
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicates skipped")
        return ", ".join(parts)


def json_lines(path: str | Path):
    """(line number, object) for each non-blank line of a small JSONL file; a line that is not JSON
    raises ValueError naming `path:line`."""
    for n, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None


def _decode(raw: bytes, name: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None


def _parse_line(raw: bytes, name: str, lineno: int, max_chars: int) -> Record:
    text = _decode(raw, name, lineno)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    rec = parse_record(obj)
    if rec.n_chars() > max_chars:
        raise RecordError(f"record has {rec.n_chars()} characters, over the limit of {max_chars} (data.max_chars)")
    return rec


def _problem_list(problems: list[Problem]) -> str:
    shown = "\n".join(f"  {p}" for p in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return shown + (f"\n  ... and {more} more" if more > 0 else "")


def ingest_jsonl(path: str | Path, skip_invalid: bool = False, max_chars: int = 4000) -> IngestReport:
    """Validate every line of `path`.

    Blank lines are ignored. A duplicate of an earlier record is skipped and counted. With any
    invalid line the file ingests nothing (IngestError listing them all) unless `skip_invalid`.
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    return ingest_bytes(path.read_bytes(), str(path), skip_invalid, max_chars)


BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark Windows tools (Notepad, Excel) write first


def ingest_bytes(data: bytes, path: str, skip_invalid: bool = False, max_chars: int = 4000,
                 fix: str = "fix them, or pass --skip-invalid to ingest the rest") -> IngestReport:
    """`ingest_jsonl` of a file's bytes (an upload), `path` naming it in messages and `fix` saying
    what to do about bad lines. A leading UTF-8 byte-order mark is dropped."""
    data = data.removeprefix(BOM)
    if not data.strip():
        raise IngestError(f"{path}: file is empty")
    report, seen = IngestReport(path), {}
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            rec = _parse_line(raw.rstrip(b"\r"), path, lineno, max_chars)
        except RecordError as e:
            report.invalid.append(Problem(path, lineno, str(e)))
            continue
        if rec.sha in seen:
            report.duplicates.append(Problem(path, lineno, f"duplicate of line {seen[rec.sha]}"))
            continue
        seen[rec.sha] = lineno
        report.records.append(rec)
    if report.invalid and not skip_invalid:
        raise IngestError(
            f"{path}: {len(report.invalid)} invalid line(s); nothing ingested "
            f"({fix}):\n{_problem_list(report.invalid)}"
        )
    if not report.records:
        raise IngestError(f"{path}: no valid records" + (f":\n{_problem_list(report.invalid)}" if report.invalid else ""))
    return report
