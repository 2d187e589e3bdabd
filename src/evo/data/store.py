"""Immutable, content-addressed storage of ingested deltas as Parquet, and their split."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evo.atomic import atomic_write_bytes, atomic_write_json, locked, read_json, sha256_bytes
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
SCHEME_V2 = "v2"  # train / val (selection only) / test (reported, gated, recalled), by record hash
SCHEME = "v3"  # the same three parts, by normalized question: every question a record asks, in any turn
SCHEMES = (SCHEME_V1, SCHEME_V2, SCHEME)


def scheme_of(split: str) -> str:
    """The scheme a ledger row's `split` value names; an empty one (rows of older roots) is v1. A v1
    row's delta is re-split as v2 (v2's test part is v1's holdout at the default fractions)."""
    split = split or SCHEME_V1
    if split not in SCHEMES:
        raise ValueError(f"unknown split scheme {split!r}; known: {', '.join(SCHEMES)}")
    return SCHEME_V2 if split == SCHEME_V1 else split


def question_key(text: str) -> str:
    """A question as the split compares it: case folded, whitespace folded, end punctuation dropped."""
    return " ".join(text.casefold().split()).rstrip(" ?.!")


def questions(record: Record) -> list[str]:
    """Every question a record asks, normalized: a chat's (or preference's) user turns, a completion's
    prompt; a text record (or a completion without a prompt) is its own question."""
    chat = record.chat()
    if chat is not None:
        asked = [m["content"] for m in chat if m["role"] == "user"]
    else:
        asked = [record.prompt if record.prompt.strip() else record.completion]
    return [question_key(q) for q in asked]


def _hash_position(text: str) -> float:
    return int(sha256_bytes(text.encode("utf-8"))[:8], 16) / 0xFFFFFFFF


def _position(record: Record, scheme: str = SCHEME_V2) -> float:
    """Where a record falls in [0, 1]. v2: by its content hash (the same record always lands the same).
    v3: the lowest place of its questions, each by its own hash, so a record that asks a test question
    in any turn is test, one that asks a val question (and no test one) is val, in every delta."""
    if scheme == SCHEME:
        return min(_hash_position(q) for q in questions(record))
    return int(record.sha[:8], 16) / 0xFFFFFFFF


def split_position(record: Record, scheme: str = SCHEME) -> float:
    """Where `record` falls in a delta's split under `scheme` (by default the one new deltas get):
    below test_fraction it is test, below test_fraction + val_fraction val, else train."""
    return _position(record, scheme)


def is_validation(record: Record, val_fraction: float) -> bool:
    return _position(record) < val_fraction


def holdout(records: list[Record], val_fraction: float) -> tuple[list[Record], list[Record]]:
    """Two sides by record hash: the rest, and the held-out lowest `val_fraction` of hashes."""
    train = [r for r in records if not is_validation(r, val_fraction)]
    val = [r for r in records if is_validation(r, val_fraction)]
    return train, val


@dataclass(frozen=True)
class DeltaParts:
    """A delta in three parts. `test` is the lowest `test_fraction` of places (v2: record hashes, the
    same records as a v1 holdout of that size; v3: question hashes), `val` the next `val_fraction`,
    `train` the rest."""

    train: list[Record]
    val: list[Record]  # selection only: checkpoints, ASHA, sweep winners, early stopping
    test: list[Record]  # reported and gated on, recalled by later generations; never used to choose


def delta_parts(records: list[Record], val_fraction: float, test_fraction: float,
                scheme: str = SCHEME) -> DeltaParts:
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction {val_fraction} + test_fraction {test_fraction} leaves nothing to train on")
    parts: tuple[list[Record], list[Record], list[Record]] = ([], [], [])
    for r in records:
        x = _position(r, scheme)
        parts[2 if x < test_fraction else 1 if x < test_fraction + val_fraction else 0].append(r)
    return DeltaParts(*parts)


@dataclass(frozen=True)
class Split:
    """How one delta is divided: recorded the first time it is ingested (`data/<sha>.split.json`) and
    used for it from then on, whatever a later config's fractions are."""

    scheme: str
    val_fraction: float
    test_fraction: float

    def parts(self, records: list[Record]) -> DeltaParts:
        return delta_parts(records, self.val_fraction, self.test_fraction, self.scheme)


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

    def split_path(self, sha: str) -> Path:
        return self.dir / f"{sha}.split.json"

    @property
    def deleted_path(self) -> Path:
        return self.dir / "deleted.json"

    def delete_records(self, shas: list[str], branch: str, note: dict) -> None:
        """Take records (by content hash, `Record.sha`) out of the replay pools of the mixes built from
        now on, on `branch`: an uploaded file deleted (`DELETE /v1/files/{id}`; `note` says which, whose,
        when). A tenant's deletion (`branch` its key id) reaches its own branch's replay only: what the
        shared line or another tenant replays changes only by an admin's deletion (`branch` ""), which
        reaches every branch. The deltas stay (the ledger's hashes and trained generations refer to
        them), and no generation's own delta is filtered (`evo.data.mix.build_mix`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with locked(self.deleted_path):
            data = read_json(self.deleted_path) if self.deleted_path.exists() else {"files": []}
            data["files"].append({**note, "branch": branch, "records": sorted(set(shas))})
            atomic_write_json(self.deleted_path, data)

    def deleted(self, branch: str = "") -> frozenset[str]:
        """The content hashes of the records taken out of `branch`'s replay (`delete_records`): the
        admin's deletions and, on a tenant's branch, that tenant's."""
        if not ensure(self.deleted_path):
            return frozenset()
        entries = read_json(self.deleted_path)["files"]
        return frozenset(s for e in entries if e["branch"] in ("", branch) for s in e["records"])

    def split_of(self, sha: str) -> Split | None:
        """The split recorded for delta `sha`, or None (a delta of an older root)."""
        path = self.split_path(sha)
        if not ensure(path):
            return None
        d = read_json(path)
        try:
            return Split(scheme_of(d["scheme"]), float(d["val_fraction"]), float(d["test_fraction"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a split record ({e})") from None

    def record_split(self, sha: str, split: Split) -> Split:
        """Record `split` for delta `sha` unless one is recorded already (the first one stays: two
        processes ingesting the same delta agree on it); returns the one in force."""
        with locked(self.split_path(sha)):
            known = self.split_of(sha)
            if known is not None:
                return known
            atomic_write_json(self.split_path(sha), {"scheme": split.scheme, "val_fraction": split.val_fraction,
                                                     "test_fraction": split.test_fraction})
        return split

    def parts(self, sha: str, unrecorded: Split) -> DeltaParts:
        """Delta `sha` in its three parts by its recorded split (`unrecorded` for a delta that has none)."""
        return (self.split_of(sha) or unrecorded).parts(self.get(sha))

    def parts_of(self, row: dict, val_fraction: float, test_fraction: float) -> DeltaParts:
        """A ledger row's delta (`data_delta_sha`) in its three parts, divided as recorded when it was
        ingested; a delta of an older root that has no record: by the row's scheme (`split`) and the
        fractions given (a later config's fractions never move a recorded delta's records)."""
        return self.parts(row["data_delta_sha"], Split(scheme_of(row.get("split", "")), val_fraction, test_fraction))

    def test_parts(self, rows: Iterable[dict], val_fraction: float, test_fraction: float,
                   everything: bool = False) -> list[list[Record]]:
        """The test part of the delta of every ledger row in `rows` that has one (`parts_of`); with
        `everything`, also of every other delta in the store (a self-replay delta, an export not yet
        trained: by its recorded split, else the current scheme and the fractions given)."""
        by_sha: dict[str, dict] = {}  # delta sha -> the first row that names it
        for r in rows:
            if r.get("data_delta_sha") and ensure(self.path(r["data_delta_sha"])):
                by_sha.setdefault(r["data_delta_sha"], r)
        out = [self.parts_of(r, val_fraction, test_fraction).test for r in by_sha.values()]
        if everything:
            out += [self.parts(p.stem, Split(SCHEME, val_fraction, test_fraction)).test
                    for p in sorted(self.dir.glob("*.parquet")) if p.stem not in by_sha]
        return out

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
