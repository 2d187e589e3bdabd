"""Feedback and served-response events, appended to `ab/<log>.jsonl` in the lineage root, each
tagged with the A/B round it belongs to.

A round is one pair of models: its key is (champion sha, candidate sha), its id
`<champion sha[:12]>-<candidate sha[:12]>` (`Round`). A new candidate or a new champion starts a new
round in the same log; the votes of earlier rounds stay in it, readable, and each round is tallied
on its own. Events written before rounds were keyed (no `round` field) are the round `legacy`.

What was said is kept beside the counts, so a round's votes can become training pairs
(`evo.ab.export`): an `answers` event holds a side-by-side pair's model input and its two answers,
and a response event of an A/B arm its model input and its text (`input`, `text`; a streamed
response has no text). The tallies ignore both.

Append-only and safe with many writers (processes or replicas): each event is one line written
with O_APPEND under an exclusive lock and fsynced. A line cut short by a crash is skipped (and
counted) when reading, so nothing already written is ever lost or rewritten.

Each store keeps a running `Tally` per round of its log and reads only the bytes written since it last looked
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
from typing import Optional

from evo.ab.router import ARMS
from evo.ab.tally import Tally
from evo.storage import resolve

KINDS = ("response", "thumbs", "pair", "pairwise", "skip", "answers")
PAIRWISE = ("champion", "candidate", "tie")
LEGACY = "legacy"  # the round of the events written before rounds were keyed by the two shas


@dataclass(frozen=True)
class Round:
    """One A/B round: the champion and the candidate it compares (no candidate: nothing to compare,
    but responses and thumbs still have a round to go to)."""

    champion: str
    candidate: Optional[str]

    @property
    def id(self) -> str:
        return f"{self.champion[:12]}-{(self.candidate or 'none')[:12]}"


class FeedbackError(ValueError):
    """An event that cannot be recorded; the message says which field and why."""


class DuplicateVote(FeedbackError):
    """A second vote on a side-by-side pair: refused, the first one stands."""


def validate(event: dict) -> dict:
    kind = event.get("kind")
    if kind not in KINDS:
        raise FeedbackError(f"'kind' must be one of {KINDS}, got {kind!r}")
    if "round" in event:
        _need(event, "round", str)
    if kind == "response":
        _need(event, "response_id", str)
        if event.get("arm") not in ARMS:
            raise FeedbackError(f"'arm' must be one of {ARMS}, got {event.get('arm')!r}")
    elif kind == "pair":  # a side-by-side pair was shown: which arm's answer was labelled "a"
        _need(event, "pair_id", str)
        if event.get("a") not in ARMS:
            raise FeedbackError(f"'a' must be one of {ARMS}, got {event.get('a')!r}")
    elif kind == "skip":  # a pair shown and passed over without a vote
        _need(event, "pair_id", str)
    elif kind == "answers":  # what a side-by-side pair asked and the two answers, labelled a and b
        _need(event, "pair_id", str)
        if not isinstance(event.get("input"), dict):
            raise FeedbackError("'input' must be the request's model input ({messages} or {prompt})")
        for label in ("a", "b"):
            if not isinstance(event.get(label), str):
                raise FeedbackError(f"'{label}' must be the answer's text")
    elif kind == "thumbs":
        _need(event, "response_id", str)
        if event.get("value") not in ("up", "down"):
            raise FeedbackError(f"'value' must be 'up' or 'down', got {event.get('value')!r}")
    else:
        _need(event, "pair_id", str)
        if event.get("winner") not in PAIRWISE:
            raise FeedbackError(f"'winner' must be one of {PAIRWISE}, got {event.get('winner')!r}")
    return event


def round_of(event: dict) -> str:
    return event.get("round") or LEGACY


def _need(event: dict, key: str, typ: type) -> None:
    if not isinstance(event.get(key), typ) or not event[key]:
        raise FeedbackError(f"'{key}' must be a non-empty {typ.__name__}")


@dataclass
class EventLog:
    events: list[dict] = field(default_factory=list)
    torn_lines: int = 0  # a partial last line left by a crash, skipped


class FeedbackStore:
    """One log (`ab/<log>.jsonl`) of many rounds, each tallied apart, so a round's verdict counts
    only its own votes."""

    def __init__(self, root: str | Path, log: str = "live"):
        self.path = resolve(root) / "ab" / f"{log}.jsonl"
        self._reset()

    def _reset(self) -> None:
        self._rounds: dict[str, Tally] = {}
        self._where: dict[str, str] = {}  # pair or response id -> its round
        self._offset, self._torn = 0, 0

    def _add(self, e: dict) -> None:
        rid = round_of(e)
        self._rounds.setdefault(rid, Tally()).add(e)
        if e["kind"] in ("pair", "response"):
            self._where[e.get("pair_id") or e["response_id"]] = rid

    def _catch_up(self, fd: int, size: int) -> None:
        """Add the complete lines written since the last look to the tallies (a line still being
        written, with no newline yet, waits for the next look)."""
        if size < self._offset:  # the log was replaced: start again
            self._reset()
        if size == self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1
        log = _parse(data[:end])
        for e in log.events:
            self._add(e)
        self._torn += log.torn_lines
        self._offset += end

    def _look(self) -> None:
        if not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            self._catch_up(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def tally(self, round_id: str = LEGACY) -> tuple[Tally, int]:
        """The running tally of one round (an empty one for a round with no events yet), brought up
        to date, and the torn lines of the whole log skipped."""
        self._look()
        return self._rounds.get(round_id) or Tally(), self._torn

    def rounds(self) -> dict[str, Tally]:
        """Every round of the log with events, in the order of its first event."""
        self._look()
        return dict(self._rounds)

    def round_of(self, item_id: str) -> Optional[str]:
        """The round a pair or a response was shown or served in, if the log has it."""
        self._look()
        return self._where.get(item_id)

    def pair(self, pair_id: str) -> dict | None:
        """The event that showed side-by-side pair `pair_id`, in whichever round, if any."""
        rid = self.round_of(pair_id)
        return self._rounds[rid].pairs.get(pair_id) if rid is not None else None

    def append(self, event: dict, durable: bool = True, once_per_pair: bool = False,
               once_per_voter: bool = False) -> dict:
        """Append one event. `durable=False` skips the fsync (the OS still gets the line at once):
        for the per-request response log, where an fsync per request would dominate latency and a
        crash can cost only the attribution of the last few responses, never a recorded vote.
        `once_per_pair`: refuse (DuplicateVote) a pairwise vote on a pair the log already has a vote on.
        `once_per_voter`: refuse (DuplicateVote) thumbs of a voter on a response it has thumbs on."""
        event = validate({**event, "time": event.get("time", time.time())})
        line = (json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            self._catch_up(fd, size)
            tally = self._rounds.get(round_of(event))
            if once_per_pair and event["kind"] == "pairwise" and tally is not None and event["pair_id"] in tally.voted:
                raise DuplicateVote(f"pair {event['pair_id']} already has a vote; the first one stands")
            if (once_per_voter and event["kind"] == "thumbs" and tally is not None
                    and (event["response_id"], event.get("voter") or "") in tally.thumbed):
                raise DuplicateVote(f"response {event['response_id']} already has this key's thumbs; the first stands")
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
