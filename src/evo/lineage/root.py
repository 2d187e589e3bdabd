"""A lineage root: the folder (or URI) that holds one line of models, and what can be read from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evo.atomic import read_json
from evo.data.records import Record
from evo.data.store import DataStore, DeltaParts, Split, scheme_of
from evo.lineage.decisions import Decisions
from evo.lineage.ledger import Ledger
from evo.lineage.registry import Registry
from evo.model.artifacts import ModelStore
from evo.storage import location, remote_for, resolve, uri_of

GEN0 = "gen-0"


def gen_id(index: int) -> str:
    return f"gen-{index}"


@dataclass
class Ancestry:
    pool: list[Record]  # training parts of every generation on the line: what replay samples from
    val: dict[str, list[Record]]  # generation -> its val part (selection)
    test: dict[str, list[Record]]  # generation -> its test part (recall, reported and gated)


@dataclass
class Lineage:
    """Everything under one lineage root."""

    root: Path  # a local folder, or a URI (s3://, gs://, file://) that every node reaches: see evo.storage
    # whose branch the generations this process trains join: "" the shared line; a tenant's key id for
    # that tenant's fine-tuning jobs (evo.finetune.run_job). The registry and the ledger record it.
    owner: str = ""
    location: str = field(init=False)  # the root as other processes open it (the URI, or the folder)
    ledger: Ledger = field(init=False)
    registry: Registry = field(init=False)
    decisions: Decisions = field(init=False)
    data: DataStore = field(init=False)
    models: ModelStore = field(init=False)

    def __post_init__(self):
        self.location = location(self.root)
        self.root = resolve(self.root)  # a URI: this process's mirror of it, its mutable files fresh
        self.root.mkdir(parents=True, exist_ok=True)
        if (remote := remote_for(self.root)) is not None:
            remote.pull_state()
        self.ledger, self.registry = Ledger(self.root), Registry(self.root)
        self.decisions = Decisions(self.root, self.registry, self.ledger)
        self.data, self.models = DataStore(self.root), ModelStore(self.root)

    def run_dir(self, gid: str) -> Path:
        return self.root / "runs" / gid

    def eval_path(self, gid: str) -> Path:
        return self.root / "evals" / f"{gid}.json"

    def ray_storage(self) -> str:
        """Ray Train's and Tune's storage_path: `runs/` under the root (a URI root: Ray writes there itself)."""
        return uri_of(self.root / "runs" / "ray")

    def accepted_ancestors(self, champion: str) -> list[tuple[str, str]]:
        """(gen_id, data_delta_sha) of every generation on the champion's line, oldest first."""
        out = []
        for sha in self.models.chain(champion):
            gid = self.registry.model(sha)["gen_id"]
            row = self.ledger.get(gid)
            if row is None:
                raise RuntimeError(f"model {sha[:12]} ({gid}) has no ledger row; the lineage root is inconsistent")
            out.append((gid, row["data_delta_sha"]))
        return out

    def parts_of(self, row: dict, val_fraction: float, test_fraction: float) -> DeltaParts:
        """A ledger row's delta in its three parts, as recorded (`DataStore.parts_of`)."""
        return self.data.parts_of(row, val_fraction, test_fraction)

    def test_parts(self, val_fraction: float, test_fraction: float, everything: bool = False) -> list[list[Record]]:
        """The test part of every generation's delta (`DataStore.test_parts`)."""
        return self.data.test_parts(self.ledger.rows(), val_fraction, test_fraction, everything)

    def ancestry(self, champion: str, val_fraction: float, test_fraction: float) -> Ancestry:
        """The replay pool (every ancestor's training part) and each ancestor's val and test parts, each
        delta divided as recorded when it was ingested (`DataStore.split_of`); a delta of an older root
        that has no record: by its ledger row's scheme and the fractions given."""
        out = Ancestry([], {}, {})
        for gid, dsha in self.accepted_ancestors(champion):
            if not dsha:  # a user's base model registered without a base corpus
                continue
            parts = self.parts_of(self.ledger.get(gid), val_fraction, test_fraction)
            out.pool.extend(parts.train)
            out.val[gid], out.test[gid] = parts.val, parts.test
        return out

    def healing_history(self, champion: str) -> list[dict]:
        """The healing results of every generation on the champion's line, oldest first."""
        out = []
        for gid, _ in self.accepted_ancestors(champion):
            if self.eval_path(gid).exists():
                out.append(read_json(self.eval_path(gid))["child"].get("healing") or {})
        return out

    def scores(self, gid: str) -> dict | None:
        """A generation's scores beside its parent's, as its eval report recorded them (None for the base)."""
        path = self.eval_path(gid)
        return read_json(path).get("scores") if path.exists() else None
