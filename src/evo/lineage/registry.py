"""`registry.json`: every model (sha, generation, parent, status, owner) and the aliases that point at them.

Entries are never removed (but a generation withdrawn before its verdict), and each alias move is
logged. Only `evo.lineage.decisions` moves an alias or changes a status or an owner.

Ownership: every model belongs to the shared line (owner "": generation 0, `evo run`, the jobs of an
admin key or of a keyless local server) or to one tenant (owner: the API key id whose fine-tuning job
made it). A tenant's models are its branch of the lineage: shown only to it and to admin (`visible`),
never behind a shared alias (champion, candidate, hence `evo`), and they join the shared line only
by an admin's promotion (`Decisions.promote`). Entries written before owners were recorded are the
shared line's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from evo.atomic import atomic_write_json, locked, read_json
from evo.storage import resolve

ALIASES = ("champion", "candidate")
STATUSES = ("base", "candidate", "promoted", "rejected", "stopped", "reverted", "withdrawn")


SHARED = ""  # the owner of the shared line's models


class RegistryError(ValueError):
    pass


def owner_of(model: dict[str, Any]) -> str:
    """Whose branch a registry entry is on: SHARED, or a tenant's key id."""
    return model.get("owner") or SHARED


def visible(model: dict[str, Any], viewer: Optional[str]) -> bool:
    """Whether `viewer` may see and use a model: None (admin) every model; SHARED (a shared-line job)
    the shared line's; a tenant's key id the shared line's and its own."""
    return viewer is None or owner_of(model) in (SHARED, viewer)


class Registry:
    def __init__(self, root: str | Path):
        self.path = resolve(root) / "registry.json"

    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"models": {}, "aliases": {a: None for a in ALIASES}, "history": []}
        data = read_json(self.path)
        data.setdefault("history", [])
        return data

    def _save(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.path, data)

    def model(self, sha: str) -> Optional[dict[str, Any]]:
        return self.load()["models"].get(sha)

    def alias(self, name: str) -> Optional[str]:
        return self.load()["aliases"].get(name)

    def by_gen(self, gen_id: str) -> Optional[str]:
        return next((s for s, m in self.load()["models"].items() if m["gen_id"] == gen_id), None)

    def find(self, name: str) -> Optional[str]:
        """A model by alias (champion, candidate), generation id, or sha (a prefix of 8+ characters
        that names one model)."""
        data = self.load()
        if name in data["aliases"]:
            return data["aliases"][name]
        by = self.by_gen(name)
        if by:
            return by
        hits = [s for s in data["models"] if len(name) >= 8 and s.startswith(name)]
        return hits[0] if len(hits) == 1 else None

    def add(self, sha: str, gen_id: str, parent_sha: str, status: str, owner: str = SHARED) -> None:
        """Record a model, on the shared line or on tenant `owner`'s branch; adding the same model again
        is a no-op (resume), a conflict an error."""
        with locked(self.path):
            self._add(sha, gen_id, parent_sha, status, owner)

    def _add(self, sha: str, gen_id: str, parent_sha: str, status: str, owner: str = SHARED) -> None:
        if status not in STATUSES:
            raise RegistryError(f"unknown status {status!r}")
        data = self.load()
        parent = data["models"].get(parent_sha)
        if owner != SHARED and parent is not None and owner_of(parent) not in (SHARED, owner):
            raise RegistryError(f"model {sha[:12]} of {owner} cannot grow from {parent['gen_id']}, another tenant's")
        entry = {"gen_id": gen_id, "parent_sha": parent_sha, "status": status, "owner": owner}
        old = data["models"].get(sha)
        if old is not None:
            if (old["gen_id"], old["parent_sha"], owner_of(old)) != (gen_id, parent_sha, owner):
                raise RegistryError(f"model {sha[:12]} is already registered as {old['gen_id']} of "
                                    f"{owner_of(old) or 'the shared line'}")
            return
        data["models"][sha] = {**entry, "created": time.time()}
        self._save(data)

    def set_status(self, sha: str, status: str) -> None:
        with locked(self.path):
            self._set_status(sha, status)

    def _set_status(self, sha: str, status: str) -> None:
        if status not in STATUSES:
            raise RegistryError(f"unknown status {status!r}")
        data = self.load()
        if sha not in data["models"]:
            raise RegistryError(f"no model {sha[:12]} in the registry")
        data["models"][sha]["status"] = status
        self._save(data)

    def set_owner(self, sha: str, owner: str) -> None:
        """A model moves to `owner`'s branch (SHARED: it joins the shared line)."""
        with locked(self.path):
            data = self.load()
            if sha not in data["models"]:
                raise RegistryError(f"no model {sha[:12]} in the registry")
            data["models"][sha]["owner"] = owner
            self._save(data)

    def forget(self, sha: str, reason: str = "") -> None:
        """Drop a model no alias points at (a generation withdrawn before its verdict); idempotent.
        The history keeps a line saying so; the model's files stay in the model store."""
        with locked(self.path):
            data = self.load()
            if sha not in data["models"]:
                return
            if sha in data["aliases"].values():
                raise RegistryError(f"model {sha[:12]} is an alias's model; move the alias first")
            gen = data["models"].pop(sha)["gen_id"]
            data["history"].append({"alias": None, "from": sha, "to": None, "reason": reason or f"{gen} withdrawn",
                                    "time": time.time()})
            self._save(data)

    def move(self, alias: str, sha: Optional[str], reason: str = "") -> None:
        with locked(self.path):
            self._move(alias, sha, reason)

    def _move(self, alias: str, sha: Optional[str], reason: str = "") -> None:
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; aliases are {ALIASES}")
        data = self.load()
        if sha is not None and sha not in data["models"]:
            raise RegistryError(f"alias {alias} cannot point at unregistered model {sha[:12]}")
        if data["aliases"].get(alias) == sha:
            return
        data["history"].append({"alias": alias, "from": data["aliases"].get(alias), "to": sha,
                                "reason": reason, "time": time.time()})
        data["aliases"][alias] = sha
        self._save(data)
