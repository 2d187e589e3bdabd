"""Uploaded training files (`/v1/files`), kept in the lineage root.

An upload is validated with evo's ingest rules (every bad line named) before anything is kept; its
bytes are stored once by content hash (`service/blobs/<sha256>.jsonl`) and each upload gets a file
object (`service/files/<id>.json`) in OpenAI's shape, owned by the key that uploaded it. Deleting a
file removes its object, and its bytes once no other file holds them.

A file holds supervised records (completion, chat, text), preference pairs (OpenAI's DPO format or
TRL's prompt/chosen/rejected), or both; its object says which (`record_kinds`), and `check_method`
refuses a job whose method cannot train on them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from evo.atomic import atomic_write_bytes, atomic_write_json, locked, read_json, sha256_bytes
from evo.data.ingest import IngestError, ingest_bytes
from evo.data.store import DataStore
from evo.openai_api import APIError, new_id, page

PURPOSES = ("fine-tune",)  # what may be uploaded
RESULTS = "fine-tune-results"  # a job's step metrics (CSV), written by evo as OpenAI writes them
METHOD_KINDS = {"supervised": ("completion", "chat", "text"), "dpo": ("preference",)}  # what each method trains on
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
        return self._keep(data, filename, purpose, owner, {
            "records": len(report.records), "duplicates_skipped": len(report.duplicates),
            "record_kinds": kinds_of(report.records)})

    def put_result(self, data: bytes, filename: str, owner: str = "") -> dict:
        """A file evo writes for a job (purpose fine-tune-results: its step metrics as CSV), its job's
        owner's, listed and read like an upload; never ingested, never a job's training file."""
        return self._keep(data, filename, RESULTS, owner, {})

    def _keep(self, data: bytes, filename: str, purpose: str, owner: str, extra: dict) -> dict:
        """The bytes once per content hash, and a new file object naming them."""
        sha = sha256_bytes(data)
        fid = new_id("file")
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": filename,
               "purpose": purpose, "status": "processed", "status_details": None, "expires_at": None,
               "sha256": sha, **extra, "owner": owner, "created_ns": time.time_ns()}
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

    def kinds(self, fid: str, owner: Optional[str] = None) -> list[str]:
        """The record kinds file `fid` holds, sorted (a file kept before its object said so: read
        again from its bytes)."""
        obj = self._get(fid, owner)
        if "record_kinds" in obj:
            return list(obj["record_kinds"])
        data = self.blob(obj["sha256"]).read_bytes()
        return kinds_of(ingest_bytes(data, obj["filename"], skip_invalid=True, max_chars=self.max_chars).records)

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
        """The file goes, and its records with it from every later replay pool (`DataStore.delete_records`)
        once no other file holds the same bytes: a generation trained on it stays as it was, but no
        later one replays it. The replay list is written before the file goes: a crash between the two
        leaves the records out of replay and the file listed, and deleting it again finishes."""
        self._get(fid, owner)
        with locked(self.dir / "files"):
            obj = self._get(fid, owner)  # again, under the lock: a delete that lost the race is a 404
            others = [p for p in (self.dir / "files").glob("file-*.json")
                      if p != self._meta(fid) and read_json(p)["sha256"] == obj["sha256"]]
            if not others and obj["purpose"] != RESULTS:  # a results file holds no records
                DataStore(self.dir.parent).delete_records(
                    [r.sha for r in self._records(obj)], owner or "",  # a tenant's deletion: its own branch's replay
                    {"file": fid, "owner": obj.get("owner", ""), "sha256": obj["sha256"], "deleted_at": int(time.time())})
            self._meta(fid).unlink(missing_ok=True)
            if not others:
                self.blob(obj["sha256"]).unlink(missing_ok=True)
        return {"id": fid, "object": "file", "deleted": True}

    def _records(self, obj: dict) -> list:
        """The records file `obj` holds, as a job ingests them (none when none passes today's limits)."""
        blob = self.blob(obj["sha256"])
        if not blob.exists():
            return []
        try:
            return ingest_bytes(blob.read_bytes(), obj["filename"], skip_invalid=True, max_chars=self.max_chars).records
        except IngestError:
            return []


def kinds_of(records) -> list[str]:
    return sorted({r.kind for r in records})


def check_method(kinds: list[str], method: str, fid: str, param: str = "training_file") -> None:
    """Refuse (400, naming `param`) a job of `method` ("supervised" or "dpo") on a file holding
    records it cannot train on: a supervised job would learn a preference pair's preferred answer
    alone and drop the rejected one; DPO has nothing to compare in a supervised record."""
    if method not in METHOD_KINDS:
        raise APIError(400, f"method {method!r} is not one of {', '.join(METHOD_KINDS)}", "method")
    wrong = [k for k in kinds if k not in METHOD_KINDS[method]]
    if not wrong:
        return
    if method == "supervised":
        why = (f"{fid} holds preference pairs (prompt, chosen, rejected); a supervised job trains on completion, "
               "chat or text records. Create the job with method {\"type\": \"dpo\"}, or upload supervised records")
    else:
        why = (f"{fid} holds {', '.join(wrong)} records; a dpo job trains on preference pairs only (OpenAI's "
               "input/preferred_output/non_preferred_output, or prompt/chosen/rejected)")
    raise APIError(400, why, param)


def public(obj: dict) -> dict:
    """A file object as clients see it: without its owner and its ordering stamp."""
    return {k: v for k, v in obj.items() if k not in ("owner", "created_ns")}
