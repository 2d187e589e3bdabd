"""Uploaded training files (`/v1/files`), kept in the lineage root.

An upload is validated with evo's ingest rules (every bad line named) before anything is kept; its
bytes are stored once by content hash (`service/blobs/<sha256>.jsonl`) and each upload gets a file
object (`service/files/<id>.json`) in OpenAI's shape, owned by the key that uploaded it. Deleting a
file removes its object, and its bytes once no other file holds them.

A job's validation file is checked by what it says, not by its id (every upload of the same bytes
gets a new id): its records that ask a question of the training file or of a test part of the lineage
(any user turn, case and spacing folded) would let checkpoint choice see what the job trains on or
what is reported, so they are left out (`validation_apart`); a validation file with nothing left beside
its training file is refused when the job is created (`check_validation_file`). (Not near-copies: a
delta's own val part is drawn from its templates as its train part is, so one word apart is the norm
between them; the same question is what must not be on both sides.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from evo.atomic import atomic_write_bytes, atomic_write_json, locked, read_json, sha256_bytes
from evo.config import EvoConfig
from evo.data.ingest import IngestError, ingest_bytes
from evo.data.records import Record
from evo.data.store import delta_parts
from evo.lineage.root import Lineage
from evo.nearcopy import questions
from evo.openai_api import APIError, new_id, page

PURPOSES = ("fine-tune",)
DEFAULT_MAX_BYTES = 16 << 20


class FileStore:
    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, max_chars: int = 100_000):
        """`max_chars`: the longest record an upload may hold; a job checks its files again against
        its lineage's own `data.max_chars`."""
        self.dir = Path(root) / "service"
        self.max_bytes, self.max_chars = max_bytes, max_chars

    def _meta(self, fid: str) -> Path:
        return self.dir / "files" / f"{fid}.json"

    def blob(self, sha: str) -> Path:
        return self.dir / "blobs" / f"{sha}.jsonl"

    def create(self, data: bytes, filename: str, purpose: str, owner: str = "") -> dict:
        """Validate and keep one upload; a refused upload leaves nothing behind."""
        if purpose not in PURPOSES:
            raise APIError(400, f"purpose {purpose!r} is not supported here: evo takes {', '.join(PURPOSES)} files",
                           "purpose")
        if len(data) > self.max_bytes:
            raise APIError(413, f"{filename}: {len(data)} bytes, over this server's limit of {self.max_bytes}", "file",
                           "request_too_large")
        try:
            report = ingest_bytes(data, filename, max_chars=self.max_chars, fix="fix them and upload the file again")
        except IngestError as e:
            raise APIError(400, str(e), "file") from None
        sha = sha256_bytes(data)
        fid = new_id("file")
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": filename,
               "purpose": purpose, "status": "processed", "status_details": None, "expires_at": None,
               "sha256": sha, "records": len(report.records), "duplicates_skipped": len(report.duplicates),
               "owner": owner, "created_ns": time.time_ns()}
        with locked(self.dir / "files"):
            if not self.blob(sha).exists():
                atomic_write_bytes(self.blob(sha), data)
            atomic_write_json(self._meta(fid), obj)
        return public(obj)

    def _get(self, fid: str, owner: Optional[str]) -> dict:
        path = self._meta(fid)
        if "/" in fid or not fid.startswith("file-") or not path.exists():
            raise APIError(404, f"no file {fid!r}", "file_id", "not_found_error")
        obj = read_json(path)
        if owner is not None and obj.get("owner", "") != owner:  # another key's file is not there for this one
            raise APIError(404, f"no file {fid!r}", "file_id", "not_found_error")
        return obj

    def get(self, fid: str, owner: Optional[str] = None) -> dict:
        return public(self._get(fid, owner))

    def content(self, fid: str, owner: Optional[str] = None) -> bytes:
        return self.blob(self._get(fid, owner)["sha256"]).read_bytes()

    def records(self, fid: str, owner: Optional[str] = None) -> list[Record]:
        """File `fid`'s records, as ingest reads them (an upload was checked when it came)."""
        obj = self._get(fid, owner)
        return ingest_bytes(self.blob(obj["sha256"]).read_bytes(), obj["filename"], max_chars=self.max_chars).records

    def path(self, fid: str, owner: Optional[str] = None) -> Path:
        """Where file `fid`'s bytes are (for a job that trains on it)."""
        return self.blob(self._get(fid, owner)["sha256"])

    def list(self, owner: Optional[str] = None, purpose: Optional[str] = None, after: Optional[str] = None,
             limit: int = 10000, order: str = "desc") -> dict:
        """Newest first (`order` desc) or oldest first (asc), in OpenAI's list shape; `after`: the id
        the previous page ended on."""
        if order not in ("asc", "desc"):
            raise APIError(400, f"order must be 'asc' or 'desc', not {order!r}", "order")
        folder = self.dir / "files"
        objs = [read_json(p) for p in folder.glob("file-*.json")] if folder.exists() else []
        objs = [o for o in objs if (owner is None or o.get("owner", "") == owner)
                and (purpose is None or o["purpose"] == purpose)]
        objs.sort(key=lambda o: (o["created_ns"], o["id"]), reverse=order == "desc")
        return page([public(o) for o in objs], after, limit)

    def delete(self, fid: str, owner: Optional[str] = None) -> dict:
        obj = self._get(fid, owner)
        with locked(self.dir / "files"):
            self._meta(fid).unlink()
            others = [p for p in (self.dir / "files").glob("file-*.json") if read_json(p)["sha256"] == obj["sha256"]]
            if not others:
                self.blob(obj["sha256"]).unlink(missing_ok=True)
        return {"id": fid, "object": "file", "deleted": True}


def public(obj: dict) -> dict:
    """A file object as clients see it: without its owner and its ordering stamp."""
    return {k: v for k, v in obj.items() if k not in ("owner", "created_ns")}


@dataclass
class KeptApart:
    """A job's validation records with what it shares with the training file and the test parts left out."""

    kept: list[Record]
    in_training: int  # left out: it asks a question of the training file
    in_tests: int  # left out: it asks a question of a test part of the lineage

    def event(self) -> str:
        """The job event that says what was left out ("" when nothing was)."""
        if not self.in_training and not self.in_tests:
            return ""
        n = self.in_training + self.in_tests
        return (f"validation file: {n} of {n + len(self.kept)} records left out, {self.in_training} in the training "
                f"file and {self.in_tests} in a test part of the lineage (the same question); "
                f"{len(self.kept)} left to choose the checkpoint")


def question_keys(records: list[Record]) -> set[str]:
    """The questions the records ask (`evo.nearcopy.questions`: every user turn of a chat), case and
    spacing folded."""
    return {" ".join(q.lower().split()) for r in records for q in questions(r)}


def validation_apart(val: list[Record], train: list[Record], tests: list[Record] = ()) -> KeptApart:
    """`val` less each record that asks a question of `train` or of `tests` (`question_keys`)."""
    trained, tested = question_keys(train), question_keys(tests)
    kept, in_training, in_tests = [], 0, 0
    for r in val:
        asks = question_keys([r])
        if asks & trained:
            in_training += 1
        elif asks & tested:
            in_tests += 1
        else:
            kept.append(r)
    return KeptApart(kept, in_training, in_tests)


def check_validation_file(files: FileStore, training_file: str, validation_file: str, owner: Optional[str]) -> None:
    """At job creation: a validation file every record of which is in the training file (the same
    bytes uploaded twice, or the same questions) would choose the checkpoint on the data the job
    trains on; refused with a 400 naming `validation_file`."""
    val = files.records(validation_file, owner)
    if not validation_apart(val, files.records(training_file, owner)).kept:
        raise APIError(400, f"validation_file {validation_file}: all {len(val)} of its records are in the training file "
                            f"{training_file} (the same questions); the validation file chooses "
                            "the checkpoint, so it must hold records the job does not train on", "validation_file")


class ValidationFileError(ValueError):
    """A job's validation file has nothing left once its training data and the test parts are left out."""


def job_validation(root: str | Path, cfg: EvoConfig, train: list[Record], val: list[Record],
                   say: Callable[[str], None]) -> list[Record]:
    """Where a job reads its validation records: those apart from its training file and from every
    test part of the lineage (each generation's, by `cfg`'s fractions); what was left out is said
    (`say`: a job event). Nothing left: ValidationFileError."""
    lin = Lineage(root)
    tests = [r for row in lin.ledger.rows() if row["data_delta_sha"] and lin.data.path(row["data_delta_sha"]).exists()
             for r in delta_parts(lin.data.get(row["data_delta_sha"]), cfg.data.val_fraction,
                                  cfg.data.test_fraction).test]
    apart = validation_apart(val, train, tests)
    if apart.event():
        say(apart.event())
    if not apart.kept:
        raise ValidationFileError(f"validation_file: none of its {len(val)} records is apart from the training file and "
                                  "the lineage's test parts, so nothing is left to choose the checkpoint on")
    return apart.kept
