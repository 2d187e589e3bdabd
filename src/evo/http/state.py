"""What one replica's routes share: the gateway, the model pool, the stores and the keys, built once
by the deployment (`evo.http.app.EvoServer`) and handed to each route as a FastAPI dependency.

The route modules are plain `APIRouter`s; a route asks for `s: State` and gets the state of the
replica that took the request (`serve.get_replica_context().servable_object`, the deployment's
instance, as Ray Serve's own class-based routes get `self`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Optional

from fastapi import Depends, Request
from ray import serve

from evo.finetune.files import FileStore
from evo.finetune.submit import JobService
from evo.http.keys import OPEN, Authenticator, Caller
from evo.inference.gateway import Gateway
from evo.inference.pool import ModelPool
from evo.openai_api import APIError


@dataclass
class ServerState:
    gw: Gateway
    files: FileStore
    auth: Authenticator
    jobs: JobService
    pool: ModelPool
    answer_batch: Callable[[dict], Awaitable[dict]]  # the deployment's @serve.batch: one pool request -> its result
    follow_s: float = 0.5
    api_docs: bool = False  # /docs, /redoc and /openapi.json (`evo serve --api-docs`); off, they 404
    _follower: Optional[asyncio.Task] = field(default=None, repr=False)

    def warm(self, shas: list[str]) -> None:
        for sha in shas:
            self.pool.get(sha)

    def follow(self) -> None:
        """Start (once) the task that takes promotions and split changes made on other replicas."""
        if self._follower is None or self._follower.done():
            self._follower = asyncio.get_running_loop().create_task(self._follow_loop())

    async def _follow_loop(self) -> None:
        while True:
            await asyncio.sleep(self.follow_s)
            try:
                self.gw.sync_split()
                if self.gw.registry_changed():
                    await self.go_live(self.gw.read_registry())
            except Exception as e:  # a half-written root or a missing model: keep serving what is live
                logging.getLogger("ray.serve").warning("evo: could not follow the lineage root: %s", e)

    async def go_live(self, data: dict) -> dict:
        """Load the new models first, then switch: no request waits on a load or is dropped."""
        await asyncio.to_thread(self.warm, [s for s in data["aliases"].values() if s])
        return {"aliases": self.gw.apply(data)}

    def caller(self, request: Request, need: str) -> Caller:
        """Who made the request (`Authenticator.caller`); an open server's caller also passes
        `Authenticator.open_request` (a loopback Host; a POST's JSON content type)."""
        who = self.auth.caller(request.headers.get("authorization"), need, client_of(request))
        if who is OPEN:
            self.auth.open_request(request.headers.get("host"), request.method, request.url.path,
                                   request.headers.get("content-type"))
        return who

    def owner(self, request: Request) -> Optional[str]:
        """Whose files and jobs a request sees: the key's (an admin key or a keyless loopback server: all)."""
        return self.caller(request, "fine-tune").owner

    def admin(self, request: Request) -> None:
        """The admin token (EVO_ADMIN_TOKEN), or a key with scope admin."""
        header = request.headers.get("authorization")
        client = client_of(request)
        if (header or "").removeprefix("Bearer ").strip():
            self.auth.guessing(client)  # 429 before the token is compared, for an address that guessed too often
        try:
            self.gw.check_admin(header)
        except APIError as token_refused:
            if not self.auth.store.live():
                if token_refused.status == 401:  # a wrong admin token counts as a guess (with keys: `caller` counts it)
                    self.auth.guessed(client)
                raise
            try:
                self.caller(request, "admin")
            except APIError as e:
                if e.status == 429:  # the address guessed too often: say so, with when to retry
                    raise
                raise token_refused from None


def client_of(request: Request) -> str:
    """The address a request came from ("" when the server does not know it)."""
    return request.client.host if request.client else ""


async def server_state() -> ServerState:
    """The state of the replica serving this request. Async, so FastAPI does not hand it to a thread."""
    return serve.get_replica_context().servable_object.state


State = Annotated[ServerState, Depends(server_state)]


async def admin_state(request: Request, s: State) -> ServerState:
    """The replica's state, once the request has shown the admin token or an admin key."""
    s.admin(request)
    return s


AdminState = Annotated[ServerState, Depends(admin_state)]


MAX_JSON_BYTES = 1 << 20  # a JSON body's cap: a chat request's limits (8000 characters) fit many times over
MAX_JSON_DEPTH = 64  # nesting deeper than this is refused before the parser recurses into it


def _depth(data: bytes) -> int:
    """How deep a JSON text's arrays and objects nest (brackets inside strings are not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in data:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # the closing quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif c in (0x5D, 0x7D):
            depth -= 1
    return deepest


async def read_json(request: Request, limit: int = MAX_JSON_BYTES) -> object:
    """The request body as JSON (an empty body is null): 413 past `limit` bytes (by its Content-Length
    before any is read, else as it streams in), 400 when it is not JSON or nests past MAX_JSON_DEPTH."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is {declared} bytes, over this server's limit of {limit} for JSON",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body passed this server's limit of {limit} bytes for JSON",
                           code="request_too_large")
        chunks.append(chunk)
    data = b"".join(chunks)
    brackets = data.count(b"[") + data.count(b"{")  # at least the depth: most bodies need no scan
    if brackets > MAX_JSON_DEPTH and await asyncio.to_thread(_depth, data) > MAX_JSON_DEPTH:
        raise APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} arrays or objects", code="invalid_json")
    try:
        return json.loads(data or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
