"""Immutable, content-addressed storage of ingested deltas as Parquet, and their split."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evo.atomic import atomic_write_bytes, sha256_bytes
from evo.data.records import Record
from evo.storage import ensure, resolve

_FIELDS = ("kind", "prompt", "completion", "messages", "category", "rid")
_REJECTED = "rejected"  # stored (and hashed) only for a delta that has a preference record


def _fields(records: list[Record]) -> tuple[str, ...]:
    return _FIELDS + ((_REJECTED,) if any(r.rejected for r in records) else ())


def delta_sha(records: list[Record]) -> str:
    """sha256 of the canonical records, in order: the delta's identity (unchanged for deltas without
    preference records, which hash as before `rejected` existed)."""
    fields = _fields(records)
    body = "\n".join(json.dumps([r.to_row()[f] for f in fields], ensure_ascii=False) for r in records)
    return sha256_bytes(body.encode("utf-8"))


# The ledger's `split` column: how a generation's delta was divided. Rows written before it have no
# value there: they used SCHEME_V1, one holdout (the lowest `val_fraction` of record hashes) that was
# both where checkpoints and sweep winners were chosen and what was reported and gated.
SCHEME_V1 = "v1"
SCHEME = "v2"  # train / val (selection only) / test (reported, gated, recalled), by record hash


def _position(record: Record) -> float:
    """Where a record falls in [0, 1], by its content hash: the same record always lands the same."""
    return int(record.sha[:8], 16) / 0xFFFFFFFF


def is_validation(record: Record, val_fraction: float) -> bool:
    return _position(record) < val_fraction


def holdout(records: list[Record], val_fraction: float) -> tuple[list[Record], list[Record]]:
    """Two sides by record hash: the rest, and the held-out lowest `val_fraction` of hashes."""
    train = [r for r in records if not is_validation(r, val_fraction)]
    val = [r for r in records if is_validation(r, val_fraction)]
    return train, val


@dataclass(frozen=True)
class DeltaParts:
    """A delta in three parts by record hash. `test` is the lowest `test_fraction` of hashes (the
    same records as a v1 holdout of that size), `val` the next `val_fraction`, `train` the rest."""

    train: list[Record]
    val: list[Record]  # selection only: checkpoints, ASHA, sweep winners, early stopping
    test: list[Record]  # reported and gated on, recalled by later generations; never used to choose


def delta_parts(records: list[Record], val_fraction: float, test_fraction: float) -> DeltaParts:
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction {val_fraction} + test_fraction {test_fraction} leaves nothing to train on")
    parts: tuple[list[Record], list[Record], list[Record]] = ([], [], [])
    for r in records:
        x = _position(r)
        parts[2 if x < test_fraction else 1 if x < test_fraction + val_fraction else 0].append(r)
    return DeltaParts(*parts)


def write_records(path: str | Path, records: list[Record]) -> str:
    """Records as a Parquet file of every Record field (a training mix, a validation set), atomically."""
    rows = [r.to_row() for r in records]
    table = pa.table({k: [row[k] for row in rows] for k in Record.__dataclass_fields__})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def read_records(path: str | Path) -> list[Record]:
    """A file written by `write_records`, back as records."""
    cols = pq.read_table(path).to_pydict()
    return [Record(**{k: cols[k][i] for k in cols}) for i in range(len(cols["kind"]))]


class DataStore:
    """`data/<sha>.parquet` under the lineage root; a stored delta is never rewritten."""

    def __init__(self, root: str | Path):
        self.dir = resolve(root) / "data"

    def path(self, sha: str) -> Path:
        return self.dir / f"{sha}.parquet"

    def put(self, records: list[Record]) -> str:
        sha = delta_sha(records)
        if not self.path(sha).exists():
            table = pa.table({f: [r.to_row()[f] for r in records] for f in _fields(records)})
            buf = io.BytesIO()
            pq.write_table(table, buf)
            atomic_write_bytes(self.path(sha), buf.getvalue())
        return sha

    def get(self, sha: str) -> list[Record]:
        path = self.path(sha)
        if not ensure(path):  # a URI root: fetched into this node's mirror once
            raise FileNotFoundError(f"{path}: delta {sha[:12]} is not in the store")
        cols = pq.read_table(path).to_pydict()
        fields = _FIELDS + ((_REJECTED,) if _REJECTED in cols else ())
        records = [Record(**{f: cols[f][i] for f in fields}) for i in range(len(cols["kind"]))]
        if delta_sha(records) != sha:
            raise ValueError(f"{path}: content does not match its sha {sha[:12]} (corrupted)")
        return records
