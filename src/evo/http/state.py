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
from evo.http.keys import Authenticator, Caller
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
        return self.auth.caller(request.headers.get("authorization"), need)

    def owner(self, request: Request) -> Optional[str]:
        """Whose files and jobs a request sees: the key's (an admin key or a keyless loopback server: all)."""
        return self.caller(request, "fine-tune").owner

    def admin(self, request: Request) -> None:
        """The admin token (EVO_ADMIN_TOKEN), or a key with scope admin."""
        header = request.headers.get("authorization")
        try:
            self.gw.check_admin(header)
        except APIError as token_refused:
            if not self.auth.store.live():
                raise
            try:
                self.caller(request, "admin")
            except APIError:
                raise token_refused from None


async def server_state() -> ServerState:
    """The state of the replica serving this request. Async, so FastAPI does not hand it to a thread."""
    return serve.get_replica_context().servable_object.state


State = Annotated[ServerState, Depends(server_state)]


async def admin_state(request: Request, s: State) -> ServerState:
    """The replica's state, once the request has shown the admin token or an admin key."""
    s.admin(request)
    return s


AdminState = Annotated[ServerState, Depends(admin_state)]


async def read_json(request: Request) -> object:
    """The request body as JSON (an empty body is null); 400 when it is not JSON."""
    try:
        return json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None
