"""Ray Serve deployments of the A/B gateway and the model pool, and `build_app` to bind them.

The gateway is the HTTP ingress (OpenAI-compatible); it resolves each request to an arm and a
model sha and asks the pool, which batches requests for the same model and settings.
"""


import asyncio
import json
import os
from dataclasses import asdict
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from evo.model.generate import Sampling
from evo.serving.gateway import Gateway, GatewaySettings
from evo.serving.openai_api import (APIError, ChatRequest, CompletionRequest, chat_response,
                                    completion_response, new_id, parse_request)
from evo.serving.pool import ModelPool

# Serve's INFO logs and per-request access logs drown evo's progress lines on a console.
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}

api = FastAPI(title="evo", description="OpenAI-compatible A/B serving of an evo lineage")


@api.exception_handler(APIError)
async def _api_error(_: Request, e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


@api.exception_handler(Exception)
async def _unexpected(_: Request, e: Exception) -> JSONResponse:  # a message, never a traceback
    return JSONResponse(APIError(500, f"internal error: {type(e).__name__}", kind="server_error").body(), 500)


async def _json(request: Request) -> object:
    try:
        return json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None


def _stream(body: dict) -> StreamingResponse:
    """Server-sent events in OpenAI's chunk shape (the text arrives whole, in one chunk per choice)."""
    chat = body["object"] == "chat.completion"

    def events():
        for c in body["choices"]:
            delta = {"delta": {"role": "assistant", "content": c["message"]["content"]}} if chat else {"text": c["text"]}
            chunk = {"id": body["id"], "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": body["created"], "model": body["model"],
                     "choices": [{"index": c["index"], "finish_reason": c["finish_reason"], **delta}],
                     "evo": body["evo"]}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield f"data: {json.dumps({'id': body['id'], 'usage': body['usage'], 'choices': []})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, logging_config=SERVE_LOGGING)
class PoolDeployment:
    def __init__(self, root: str, max_models: int = 4, dtype: str = "float32"):
        self.pool = ModelPool(root, max_models, dtype)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def generate(self, requests: list[dict]) -> list[dict]:
        return self.pool.run(requests)

    def warm(self, shas: list[str]) -> int:
        for sha in shas:
            self.pool.get(sha)
        return len(shas)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, logging_config=SERVE_LOGGING)
@serve.ingress(api)
class GatewayDeployment:
    def __init__(self, pool: DeploymentHandle, settings: dict):
        self.pool = pool
        self.gw = Gateway(GatewaySettings(**settings))

    async def _generate(self, req, target) -> dict:
        """One OpenAI-shaped answer from `target`, logged as a response of its arm."""
        chat = isinstance(req, ChatRequest)
        sampling = Sampling(req.max_tokens, req.temperature, req.top_p, req.n, req.seed)
        payload = {"messages": [m.model_dump() for m in req.messages]} if chat else {"prompt": req.prompt}
        result = await self.pool.generate.remote({"sha": target.sha, "sampling": asdict(sampling),
                                                  "stops": req.stops(), **payload})
        rid = new_id("chatcmpl" if chat else "cmpl")
        self.gw.record_response(rid, target, req.user)
        build = chat_response if chat else completion_response
        body = build(rid, target.name, result["outputs"], result["prompt_tokens"], target.arm)
        body["evo"]["sha"] = target.sha
        return body

    async def _answer(self, request: Request, kind: type):
        req = parse_request(kind, await _json(request), self.gw.settings.limits)
        target = self.gw.resolve(req.model, req.user or request.headers.get("x-evo-user"))
        body = await self._generate(req, target)
        return _stream(body) if req.stream else body

    @api.post("/v1/side_by_side")
    async def side_by_side(self, request: Request):
        """Both arms answer one prompt, labelled a and b at random, for a pairwise rating."""
        raw = await _json(request)
        kind = ChatRequest if isinstance(raw, dict) and "messages" in raw else CompletionRequest
        req = parse_request(kind, {"model": "evo", **raw} if isinstance(raw, dict) else raw, self.gw.settings.limits)
        pair_id, targets = self.gw.open_pair()
        a, b = await asyncio.gather(self._generate(req, targets["a"]), self._generate(req, targets["b"]))
        for ans in (a, b):  # blind: which arm answered is revealed only after the rating
            ans["model"] = "evo"
            ans.pop("evo")
        return {"pair_id": pair_id, "a": a, "b": b,
                "rate_at": "/v1/feedback/pairwise with {pair_id, preferred: a | b | tie}"}

    @api.post("/v1/feedback/pairwise")
    async def pairwise(self, request: Request):
        return self.gw.record_preference(await _json(request))

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request):
        return await self._answer(request, ChatRequest)

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._answer(request, CompletionRequest)

    @api.get("/v1/models")
    def models(self):
        return self.gw.model_list()

    @api.post("/v1/feedback")
    async def thumbs(self, request: Request):
        return self.gw.record_feedback(await _json(request), "thumbs")

    @api.get("/ab/stats")
    def stats(self):
        return self.gw.stats()

    @api.post("/admin/split")
    async def split(self, request: Request):
        self.gw.check_admin(request.headers.get("authorization"))
        return self.gw.set_split(await _json(request))

    async def _go_live(self, data: dict) -> dict:
        """Load the new models first, then switch: no request waits on a load or is dropped."""
        await self.pool.warm.remote([s for s in data["aliases"].values() if s])
        return {"aliases": self.gw.apply(data)}

    @api.post("/admin/reload")
    async def reload(self, request: Request):
        self.gw.check_admin(request.headers.get("authorization"))
        return await self._go_live(self.gw.read_registry())

    @api.post("/admin/promote")
    async def promote(self, request: Request):
        self.gw.check_admin(request.headers.get("authorization"))
        return await self._go_live(self.gw.promote())

    @api.post("/admin/revert")
    async def revert(self, request: Request):
        self.gw.check_admin(request.headers.get("authorization"))
        return await self._go_live(self.gw.revert())


def build_app(root: str, candidate_share: float = 0.5, admin_token: Optional[str] = None, dtype: str = "float32",
              round_id: str = "live"):
    """The bound application: `serve.run(build_app(root))`."""
    settings = {"root": root, "candidate_share": candidate_share, "round_id": round_id,
                "admin_token": admin_token if admin_token is not None else os.environ.get("EVO_ADMIN_TOKEN")}
    return GatewayDeployment.bind(PoolDeployment.bind(root, 4, dtype), settings)
