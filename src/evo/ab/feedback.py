"""Feedback and served-response events, appended to `ab/<round>.jsonl` in the lineage root.

Append-only and safe with many writers (processes or replicas): each event is one line written
with O_APPEND under an exclusive lock and fsynced. A line cut short by a crash is skipped (and
counted) when reading, so nothing already written is ever lost or rewritten.

Each store keeps a running `Tally` of its log and reads only the bytes written since it last looked
(its own and other replicas'), so a vote, a duplicate check, a pair lookup and a stats read cost the
same however long the log has grown.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from evo.ab.router import ARMS
from evo.ab.tally import Tally
from evo.storage import resolve

KINDS = ("response", "thumbs", "pair", "pairwise")
PAIRWISE = ("champion", "candidate", "tie")


class FeedbackError(ValueError):
    """An event that cannot be recorded; the message says which field and why."""


class DuplicateVote(FeedbackError):
    """A second vote on a side-by-side pair: refused, the first one stands."""


def validate(event: dict) -> dict:
    kind = event.get("kind")
    if kind not in KINDS:
        raise FeedbackError(f"'kind' must be one of {KINDS}, got {kind!r}")
    if kind == "response":
        _need(event, "response_id", str)
        if event.get("arm") not in ARMS:
            raise FeedbackError(f"'arm' must be one of {ARMS}, got {event.get('arm')!r}")
    elif kind == "pair":  # a side-by-side pair was shown: which arm's answer was labelled "a"
        _need(event, "pair_id", str)
        if event.get("a") not in ARMS:
            raise FeedbackError(f"'a' must be one of {ARMS}, got {event.get('a')!r}")
    elif kind == "thumbs":
        _need(event, "response_id", str)
        if event.get("value") not in ("up", "down"):
            raise FeedbackError(f"'value' must be 'up' or 'down', got {event.get('value')!r}")
    else:
        _need(event, "pair_id", str)
        if event.get("winner") not in PAIRWISE:
            raise FeedbackError(f"'winner' must be one of {PAIRWISE}, got {event.get('winner')!r}")
    return event


def _need(event: dict, key: str, typ: type) -> None:
    if not isinstance(event.get(key), typ) or not event[key]:
        raise FeedbackError(f"'{key}' must be a non-empty {typ.__name__}")


@dataclass
class EventLog:
    events: list[dict] = field(default_factory=list)
    torn_lines: int = 0  # a partial last line left by a crash, skipped


class FeedbackStore:
    """One log per A/B round (`ab/<round>.jsonl`), so a round's verdict counts only its own votes."""

    def __init__(self, root: str | Path, round_id: str = "live"):
        self.path = resolve(root) / "ab" / f"{round_id}.jsonl"
        self._tally, self._offset, self._torn = Tally(), 0, 0

    def _catch_up(self, fd: int, size: int) -> None:
        """Add the complete lines written since the last look to the tally (a line still being
        written, with no newline yet, waits for the next look)."""
        if size < self._offset:  # the log was replaced: start again
            self._tally, self._offset, self._torn = Tally(), 0, 0
        if size == self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1
        log = _parse(data[:end])
        for e in log.events:
            self._tally.add(e)
        self._torn += log.torn_lines
        self._offset += end

    def tally(self) -> tuple[Tally, int]:
        """The running tally of the whole log, brought up to date, and the torn lines skipped."""
        if not self.path.exists():
            return self._tally, self._torn
        fd = os.open(self.path, os.O_RDONLY)
        try:
            self._catch_up(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return self._tally, self._torn

    def pair(self, pair_id: str) -> dict | None:
        """The event that showed side-by-side pair `pair_id`, if any."""
        return self.tally()[0].pairs.get(pair_id)

    def append(self, event: dict, durable: bool = True, once_per_pair: bool = False) -> dict:
        """Append one event. `durable=False` skips the fsync (the OS still gets the line at once):
        for the per-request response log, where an fsync per request would dominate latency and a
        crash can cost only the attribution of the last few responses, never a recorded vote.
        `once_per_pair`: refuse (DuplicateVote) a pairwise vote on a pair the log already has a vote on."""
        event = validate({**event, "time": event.get("time", time.time())})
        line = (json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            self._catch_up(fd, size)
            if once_per_pair and event["kind"] == "pairwise" and event["pair_id"] in self._tally.voted:
                raise DuplicateVote(f"pair {event['pair_id']} already has a vote; the first one stands")
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a writer died mid-line: fence it off
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return event

    def read(self) -> EventLog:
        return _parse(self.path.read_bytes()) if self.path.exists() else EventLog()


def _parse(data: bytes) -> EventLog:
    log = EventLog()
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            log.events.append(json.loads(raw))
        except json.JSONDecodeError:
            log.torn_lines += 1
    return log
