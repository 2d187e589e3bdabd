"""API keys for `evo serve` (`evo keys create|list|revoke`), kept in the lineage root.

A key is shown once, when it is made; `service/keys.json` keeps its sha256, never the key. Scopes
nest: `inference` may ask the models and give feedback, `fine-tune` also uploads files and runs jobs,
`admin` also promotes, rejects, reverts and sets the split, and sees every tenant's files and jobs.
Each key is a tenant: it sees only its own files, jobs and fine-tuned models.

Open mode: a root that has never had a key, served on loopback, answers without one (one local user,
every action). Only that: once any key has been made, revoked or not, a request without a live key
is a 401, so revoking the last key closes the server rather than opening it; a server bound to any
other address refuses every request but health until a key exists. An open server still takes only
requests a web page cannot forge (`Authenticator.open_request`): a loopback Host header (no DNS
rebinding) and, for a POST, `Content-Type: application/json` (or a multipart upload to /v1/files).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from evo.atomic import atomic_write_json, locked, read_json
from evo.errors import EvoError
from evo.openai_api import APIError
from evo.storage import open_root

SCOPES = ("inference", "fine-tune", "admin")
PREFIX = "evo-"


class KeysError(EvoError, ValueError):
    pass


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who made a request: a key's id and scope, or the one tenant of a keyless loopback server."""

    key_id: str
    scope: str

    def can(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    @property
    def owner(self) -> Optional[str]:
        """Whose objects this caller sees: its own (None: everyone's, for admin)."""
        return None if self.scope == "admin" else self.key_id


OPEN = Caller("", "admin")  # a loopback server on a root that never had a key: one tenant, every action
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def host_name(host: Optional[str]) -> str:
    """The name in a Host header, without its port: '127.0.0.1:8000' -> '127.0.0.1', '[::1]:80' -> '::1'."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class KeyStore:
    def __init__(self, root: str | Path):
        self.path = Path(root) / "service" / "keys.json"

    def _load(self) -> dict:
        return read_json(self.path) if self.path.exists() else {"keys": {}}

    def create(self, scope: str, name: str = "") -> tuple[str, dict]:
        """A new key (returned once) and its stored row."""
        if scope not in SCOPES:
            raise KeysError(f"scope {scope!r}: one of {', '.join(SCOPES)}")
        key = PREFIX + secrets.token_urlsafe(32)
        kid = "key-" + secrets.token_hex(6)
        row = {"id": kid, "name": name or kid, "scope": scope, "sha256": _hash(key), "created_at": int(time.time()),
               "created_ns": time.time_ns(), "revoked_at": None}
        with locked(self.path):
            data = self._load()
            if name and any(r["name"] == name and not r["revoked_at"] for r in data["keys"].values()):
                raise KeysError(f"a live key is already named {name!r} (evo keys list)")
            data["keys"][kid] = row
            atomic_write_json(self.path, data)
        return key, row

    def rows(self) -> list[dict]:
        return sorted(self._load()["keys"].values(), key=lambda r: r["created_ns"])

    def live(self) -> list[dict]:
        return [r for r in self.rows() if not r["revoked_at"]]

    def revoke(self, which: str) -> dict:
        """Revoke a key by id or name; its requests get 401 from the next one on."""
        with locked(self.path):
            data = self._load()
            found = [r for r in data["keys"].values() if which in (r["id"], r["name"]) and not r["revoked_at"]]
            if len(found) != 1:
                raise KeysError(f"{which!r}: {'no live key' if not found else 'several live keys'} with that id or name "
                                "(evo keys list)")
            found[0]["revoked_at"] = int(time.time())
            atomic_write_json(self.path, data)
        return found[0]


class Authenticator:
    """Bearer keys checked against the key store (re-read when it changes), and a per-key rate limit."""

    def __init__(self, root: str | Path, loopback: bool = True, rate_per_minute: float = 0):
        self.store, self.loopback, self.rate = KeyStore(root), loopback, rate_per_minute
        self._stamp, self._by_hash, self._ever = None, {}, False
        self._names: dict[str, str] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._failed: dict[str, tuple[float, float]] = {}  # client address -> bucket of keys not valid
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            st = self.store.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            rows = self.store.rows() if stamp else []
            self._by_hash = {r["sha256"]: r for r in rows if not r["revoked_at"]}
            self._names = {r["id"]: r.get("name") or r["id"] for r in rows}
            self._ever, self._stamp = bool(rows), stamp  # revoked rows stay: the root has had keys

    def names(self) -> dict[str, str]:
        """Each key's name by its id, revoked keys' too (their models stay): what a tenant's models are
        `owned_by` (the name an admin gave with `evo keys create --name`; the key id where none was)."""
        self._refresh()
        return dict(self._names)

    @property
    def open(self) -> bool:
        """Open mode: served on loopback, and the root has never had a key."""
        self._refresh()
        return self.loopback and not self._ever

    def caller(self, authorization: Optional[str], need: str, client: str = "") -> Caller:
        """Who this is, or 401 / 403 / 429 with what to do about it. `client`: the address the request
        came from, whose keys that are not valid are counted (`guessing`)."""
        self._refresh()
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not self._ever:
            if self.loopback:
                return OPEN
            raise APIError(401, "this server is reachable from other machines and has no API keys yet: create one with "
                                "`evo keys create --scope inference` and send 'Authorization: Bearer <key>'",
                           kind="authentication_error", code="invalid_api_key")
        if given:
            self.guessing(client)
        row = next((r for h, r in self._by_hash.items() if hmac.compare_digest(h, _hash(given))), None) if given else None
        if row is None:
            if given:
                self.guessed(client)
            what = "needs 'Authorization: Bearer <key>'" if not given else "got a key that is not valid (or revoked)"
            if not self._by_hash:
                what += "; every key it had is revoked: create one with `evo keys create`"
            raise APIError(401, f"this server {what}", kind="authentication_error", code="invalid_api_key")
        caller = Caller(row["id"], row["scope"])
        if not caller.can(need):
            raise APIError(403, f"key {row['name']!r} has scope {row['scope']!r}; this needs {need!r}", kind="permission_error")
        self._take(row)
        return caller

    @staticmethod
    def open_request(host: Optional[str], method: str, path: str, content_type: Optional[str]) -> None:
        """What an open server (no key) also asks of a request, so that no web page can make one for
        its visitor: a loopback Host (a page on a rebinding domain sends its own name) and, for a POST,
        a JSON content type (which a cross-site page cannot send without the preflight this server
        never grants); a multipart upload to /v1/files is the one other POST taken."""
        if host_name(host) not in LOOPBACK_NAMES:
            raise APIError(403, f"this server has no API keys and answers only requests addressed to it by a loopback "
                                f"name ({', '.join(LOOPBACK_NAMES)}), not Host {host!r}", kind="permission_error",
                           code="host_not_allowed")
        if method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            ctype = (content_type or "").partition(";")[0].strip().lower()
            if ctype != "application/json" and not (path == "/v1/files" and ctype == "multipart/form-data"):
                raise APIError(415, f"{method} {path} takes 'Content-Type: application/json', not "
                                    f"{content_type or 'a body without a content type'}", code="unsupported_media_type")

    def guessing(self, client: str) -> None:
        """Before a key or admin token from `client` is checked: 429 (with Retry-After) once that
        address has sent `rate` that were not valid within the last minute, whatever it sends now, so
        that guesses cost a minute each past the first `rate`. Other addresses are not slowed."""
        if self.rate <= 0:
            return
        tokens = self._guesses(client, 0)
        if tokens < 1:
            wait = (1 - tokens) * 60 / self.rate
            raise APIError(429, f"{self.rate:g} requests with a key that is not valid came from this address within a "
                                f"minute; retry in {wait:.1f} s", kind="rate_limit_error",
                           headers={"Retry-After": str(math.ceil(wait))})

    def guessed(self, client: str) -> None:
        """A key or admin token from `client` that was not valid: one more against its address."""
        if self.rate > 0:
            self._guesses(client, 1)

    def _guesses(self, client: str, take: int) -> float:
        """`client`'s bucket of keys that were not valid, refilled to now, less `take`; what it held."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._failed.get(client, (self.rate, now))
            tokens = min(self.rate, tokens + (now - last) * self.rate / 60)
            self._failed[client] = (tokens - take, now)
            if len(self._failed) > 10_000:  # bounded: the oldest addresses go first
                self._failed.pop(next(iter(self._failed)))
        return tokens

    def _take(self, row: dict) -> None:
        """A token bucket per key: `rate` requests a minute, bursts of up to that many. Over it: 429 with
        `Retry-After` (whole seconds, rounded up)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(row["id"], (self.rate, now))
            tokens = min(self.rate, tokens + (now - last) * self.rate / 60)
            if tokens < 1:
                wait = (1 - tokens) * 60 / self.rate
                self._buckets[row["id"]] = (tokens, now)
                raise APIError(429, f"key {row['name']!r} is over its limit of {self.rate:g} requests a minute; "
                                    f"retry in {wait:.1f} s",
                               kind="rate_limit_error", headers={"Retry-After": str(math.ceil(wait))})
            self._buckets[row["id"]] = (tokens - 1, now)


def cmd_keys(root: str, action: str, which: str | None, scope: str, name: str | None) -> int:
    """`evo keys create|list|revoke`: the root's API keys (light: no model, no Ray)."""
    store = KeyStore(open_root(root))
    if action == "create":
        key, row = store.create(scope, name or "")
        print(f"created {row['id']} ({row['name']}, scope {row['scope']}); the key, shown this once:\n{key}")
    elif action == "revoke":
        if not which:
            raise SystemExit("evo keys revoke: give the key's id or name (evo keys list)")
        row = store.revoke(which)
        print(f"revoked {row['id']} ({row['name']}): its requests get 401 from now on")
    else:
        for r in store.rows():
            state = "revoked" if r["revoked_at"] else "live"
            print(f"{r['id']}  {r['name']:<20} {r['scope']:<10} {state}")
    return 0
