"""The Ray Serve deployment of evo's A/B server, and `build_app` to bind it.

One deployment is both the HTTP ingress (OpenAI-compatible) and the model holder: the gateway
resolves a request to an arm and a model sha, and the replica's own pool answers it, batching
requests for the same model and settings. Keeping the models in the ingress replica saves a
handle hop (about 3 ms here) on every request.
"""


import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import asdict
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve

from evo.ab.rating_queue import RatingQueue
from evo.ab.tally import prompt_key
from evo.ab.verdict import TestPlan
from evo.finetune.files import FileStore
from evo.finetune.jobs import public
from evo.finetune.submit import JobService, RayJobs
from evo.http.keys import Authenticator, Caller
from evo.http.pages import CONSOLE, RATE
from evo.inference.gateway import Gateway, GatewaySettings
from evo.inference.pool import ModelPool
from evo.model.generate import Sampling
from evo.openai_api import (
    APIError,
    ChatRequest,
    CompletionRequest,
    chat_response,
    completion_response,
    new_id,
    parse_request,
    usage,
)

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


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass `limit` bytes (by its
    Content-Length before any is read, else while it streams in), so nothing over it is kept."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the upload is {declared} bytes, over this server's limit of {limit}", "file",
                       "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the upload passed this server's limit of {limit} bytes", "file", "request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _chunk(rid: str, chat: bool, model: str, created: int, evo: dict, index: int, text: str,
           finish: Optional[str], first: bool = False) -> str:
    """One server-sent event in OpenAI's chunk shape."""
    delta = {"delta": {"content": text, **({"role": "assistant"} if first else {})}} if chat else {"text": text}
    chunk = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
             "model": model, "choices": [{"index": index, "finish_reason": finish, **delta}], "evo": evo}
    return f"data: {json.dumps(chunk)}\n\n"


def _stream_whole(body: dict) -> StreamingResponse:
    """Server-sent events for n > 1: each choice arrives whole, in one chunk."""
    chat = body["object"] == "chat.completion"

    def events():
        for c in body["choices"]:
            text = c["message"]["content"] if chat else c["text"]
            yield _chunk(body["id"], chat, body["model"], body["created"], body["evo"], c["index"], text,
                         c["finish_reason"], first=True)
        yield f"data: {json.dumps({'id': body['id'], 'usage': body['usage'], 'choices': []})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _request_payload(req, target) -> dict:
    chat = isinstance(req, ChatRequest)
    sampling = Sampling(req.max_tokens, req.temperature, req.top_p, req.n, req.seed)
    payload = {"messages": [m.model_dump() for m in req.messages]} if chat else {"prompt": req.prompt}
    return {"sha": target.sha, "sampling": asdict(sampling), "stops": req.stops(), **payload}


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, logging_config=SERVE_LOGGING)
@serve.ingress(api)
class EvoServer:
    """The HTTP ingress and the models in one replica: a request is routed, batched and generated
    without a second hop. Scale out with num_replicas; every replica serves both arms, and they
    share the split and the aliases through the lineage root (followed every `follow_s`)."""

    def __init__(self, settings: dict, max_models: int = 4, dtype: str = "float32", follow_s: float = 0.5,
                 max_upload_bytes: int = 16 << 20, loopback: bool = True, rate_per_minute: float = 0,
                 jobs_address: Optional[str] = None, jobs_headers: Optional[dict] = None):
        self.gw = Gateway(GatewaySettings(**settings))
        self.files = FileStore(settings["root"], max_upload_bytes)
        self.auth = Authenticator(settings["root"], loopback, rate_per_minute)
        self.jobs = JobService(settings["root"], RayJobs(settings["root"], jobs_address, jobs_headers))
        self.pool = ModelPool(settings["root"], max_models, dtype)
        self.follow_s = follow_s
        self._follower: Optional[asyncio.Task] = None
        self._warm([s for s in self.gw.aliases.values() if s])  # the first request does not wait on a load

    def _warm(self, shas: list[str]) -> None:
        for sha in shas:
            self.pool.get(sha)

    def _follow(self) -> None:
        """Start (once) the task that takes promotions and split changes made on other replicas."""
        if self._follower is None or self._follower.done():
            self._follower = asyncio.get_running_loop().create_task(self._follow_loop())

    async def _follow_loop(self) -> None:
        while True:
            await asyncio.sleep(self.follow_s)
            try:
                self.gw.sync_split()
                if self.gw.registry_changed():
                    await self._go_live(self.gw.read_registry())
            except Exception as e:  # a half-written root or a missing model: keep serving what is live
                logging.getLogger("ray.serve").warning("evo: could not follow the lineage root: %s", e)

    async def _go_live(self, data: dict) -> dict:
        """Load the new models first, then switch: no request waits on a load or is dropped."""
        await asyncio.to_thread(self._warm, [s for s in data["aliases"].values() if s])
        return {"aliases": self.gw.apply(data)}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def generate(self, requests: list[dict]) -> list[dict]:
        """Requests for the same model and settings share one generate call (on a thread, so the
        replica keeps taking requests meanwhile)."""
        return await asyncio.to_thread(self.pool.run, requests)

    async def _generate(self, req, target) -> dict:
        """One OpenAI-shaped answer from `target`, logged as a response of its arm."""
        chat = isinstance(req, ChatRequest)
        result = await self.generate(_request_payload(req, target))
        rid = new_id("chatcmpl" if chat else "cmpl")
        self.gw.record_response(rid, target, req.user)
        build = chat_response if chat else completion_response
        body = build(rid, target.name, result["outputs"], result["prompt_tokens"], target.arm)
        body["evo"]["sha"] = target.sha
        return body

    def _stream_tokens(self, req, target) -> StreamingResponse:
        """Server-sent events, token by token, for one choice."""
        chat = isinstance(req, ChatRequest)
        rid, created = new_id("chatcmpl" if chat else "cmpl"), int(time.time())
        evo = {"arm": target.arm, "sha": target.sha}
        prompt_tokens, deltas = self.pool.stream(_request_payload(req, target))
        self.gw.record_response(rid, target, req.user)

        def events():
            first = True
            for d in deltas:
                if d.text or d.finish_reason:
                    yield _chunk(rid, chat, target.name, created, evo, 0, d.text, d.finish_reason, first)
                    first = False
                if d.finish_reason:
                    use = usage(prompt_tokens, d.completion_tokens)
                    yield f"data: {json.dumps({'id': rid, 'usage': use, 'choices': []})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def _caller(self, request: Request, need: str) -> Caller:
        return self.auth.caller(request.headers.get("authorization"), need)

    def _admin(self, request: Request) -> None:
        """The admin token (EVO_ADMIN_TOKEN), or a key with scope admin."""
        header = request.headers.get("authorization")
        try:
            self.gw.check_admin(header)
        except APIError as token_refused:
            if not self.auth.store.live():
                raise
            try:
                self._caller(request, "admin")
            except APIError:
                raise token_refused from None

    async def _answer(self, request: Request, kind: type):
        caller = self._caller(request, "inference")
        self._follow()
        req = parse_request(kind, await _json(request), self.gw.settings.limits)
        target = self.gw.resolve(req.model, req.user or request.headers.get("x-evo-user"), caller.owner)
        if req.stream and req.n == 1:
            return await asyncio.to_thread(self._stream_tokens, req, target)
        body = await self._generate(req, target)
        if req.stream:
            return _stream_whole(body)
        return Response(json.dumps(body), media_type="application/json")  # already plain JSON: skip FastAPI's encoder

    @api.post("/v1/side_by_side")
    async def side_by_side(self, request: Request):
        """Both arms answer one prompt, labelled a and b at random, for a pairwise rating."""
        self._caller(request, "inference")
        self._follow()
        if self.gw.registry_changed():  # a candidate staged a moment ago is rated now, not after the next follow
            await self._go_live(self.gw.read_registry())
        raw = await _json(request)
        kind = ChatRequest if isinstance(raw, dict) and "messages" in raw else CompletionRequest
        req = parse_request(kind, {"model": "evo", **raw} if isinstance(raw, dict) else raw, self.gw.settings.limits)
        pair_id, targets = self.gw.open_pair(prompt_key(raw))
        a, b = await asyncio.gather(self._generate(req, targets["a"]), self._generate(req, targets["b"]))
        for ans in (a, b):  # blind: which arm answered is revealed only after the rating
            ans["model"] = "evo"
            ans.pop("evo")
        return {"pair_id": pair_id, "a": a, "b": b,
                "rate_at": "/v1/feedback/pairwise with {pair_id, preferred: a | b | tie}"}

    @api.post("/v1/feedback/pairwise")
    async def pairwise(self, request: Request):
        self._caller(request, "inference")
        return self.gw.record_preference(await _json(request))

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request):
        return await self._answer(request, ChatRequest)

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._answer(request, CompletionRequest)

    @api.get("/v1/models")
    def models(self, request: Request):
        return self.gw.model_list(self._caller(request, "inference").owner)

    @api.post("/v1/feedback")
    async def thumbs(self, request: Request):
        self._caller(request, "inference")
        return self.gw.record_feedback(await _json(request), "thumbs")

    @api.get("/ab/stats")
    def stats(self, request: Request):
        self._caller(request, "inference")
        return self.gw.stats()

    @api.get("/", response_class=HTMLResponse)
    def console(self):
        """The console: jobs with live loss curves, upload and start, the lineage tree, the A/B state."""
        return HTMLResponse(CONSOLE)

    @api.get("/rate", response_class=HTMLResponse)
    def rate_page(self):
        """Blind side-by-side rating by a person, then the reveal; the leaderboard."""
        return HTMLResponse(RATE)

    @api.get("/evo/lineage")
    def lineage(self, request: Request):
        return self.gw.lineage(self._caller(request, "inference").owner)

    @api.get("/evo/leaderboard")
    def leaderboard(self, request: Request):
        self._caller(request, "inference")
        return self.gw.leaderboard()

    @api.get("/evo/rate/next")
    def rate_next(self, request: Request):
        self._caller(request, "inference")
        prompt = RatingQueue(self.gw.settings.root).next(self.gw.feedback.tally()[0].prompts)
        if prompt is None:
            raise APIError(404, "no queued prompt is waiting for a rating; type one", kind="not_found_error")
        return {"prompt": prompt}

    @api.post("/evo/rate/queue")
    async def rate_queue(self, request: Request):
        self._admin(request)
        return RatingQueue(self.gw.settings.root).add(await _json(request))

    @api.get("/health")
    def health(self):
        """Open to all: whether this replica is up, and what it serves."""
        return {"status": "ok", "aliases": self.gw.aliases}

    def _owner(self, request: Request) -> Optional[str]:
        """Whose files and jobs a request sees: the key's (an admin key or a keyless loopback server: all)."""
        return self._caller(request, "fine-tune").owner

    @api.post("/v1/files")
    async def upload(self, request: Request):
        """multipart/form-data with `file` and `purpose` (fine-tune), as OpenAI's SDKs send it."""
        owner = self._caller(request, "fine-tune").key_id  # an upload belongs to the key that made it
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise APIError(400, "POST /v1/files takes multipart/form-data with 'file' and 'purpose' (fine-tune), not "
                                f"{request.headers.get('content-type') or 'a body without a content type'}")
        data = await _bounded_body(request, self.files.max_bytes + (64 << 10))  # room for the multipart framing
        request._body = data  # Starlette parses the form from the body read above
        try:
            form = await request.form()
        except Exception as e:  # a body that is not multipart
            raise APIError(400, f"POST /v1/files takes multipart/form-data with 'file' and 'purpose' ({e})") from None
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "multipart field 'file' is missing (the JSONL file to upload)", "file")
        if not isinstance(purpose, str) or not purpose:
            raise APIError(400, "multipart field 'purpose' is missing (fine-tune)", "purpose")
        content = await upload.read()
        return await asyncio.to_thread(self.files.create, content, upload.filename or "upload.jsonl", purpose, owner)

    @api.get("/v1/files")
    def list_files(self, request: Request, purpose: Optional[str] = None, after: Optional[str] = None,
                   limit: int = 10000, order: str = "desc"):
        return self.files.list(self._owner(request), purpose, after, max(1, limit), order)

    @api.get("/v1/files/{file_id}")
    def get_file(self, request: Request, file_id: str):
        return self.files.get(file_id, self._owner(request))

    @api.get("/v1/files/{file_id}/content")
    def file_content(self, request: Request, file_id: str):
        return Response(self.files.content(file_id, self._owner(request)), media_type="application/jsonl")

    @api.delete("/v1/files/{file_id}")
    def delete_file(self, request: Request, file_id: str):
        return self.files.delete(file_id, self._owner(request))

    def _job_model(self, name: str, owner: Optional[str]) -> tuple[str, str]:
        """A job's `model`: a generation id, a sha (8+ characters), champion or candidate, or one of
        this key's fine-tuned models; (the generation id it names, its sha)."""
        if name.startswith("ft:"):
            sha = self.gw.resolve(name, None, owner).sha
        else:
            sha = self.gw.registry.find(name)
            if sha is None:
                raise APIError(404, f"model '{name}' is not a model here: give a generation (gen-N), a sha, "
                                    "champion, or one of your fine-tuned models (GET /v1/models)", "model", "not_found_error")
            job = self.gw.job_models().get(sha)
            if job is not None and owner is not None and job["owner"] != owner:  # another key's: not there
                raise APIError(404, f"model '{name}' is not a model here", "model", "not_found_error")
        return self.gw.registry.model(sha)["gen_id"], sha

    @api.post("/v1/fine_tuning/jobs")
    async def create_job(self, request: Request):
        caller = self._caller(request, "fine-tune")
        body = await _json(request)
        job = self.jobs.store.create(body, caller.key_id, caller.owner, self.files,
                                     lambda name: self._job_model(name, caller.owner))
        return public(await asyncio.to_thread(self.jobs.start, job))

    @api.get("/v1/fine_tuning/jobs")
    def list_jobs(self, request: Request, after: Optional[str] = None, limit: int = 20):
        owner = self._owner(request)
        for job in self.jobs.store.all():
            if owner is None or job["owner"] == owner:
                self.jobs.settle(job)
        return self.jobs.store.list(owner, after, limit)

    @api.get("/v1/fine_tuning/jobs/{job_id}")
    def get_job(self, request: Request, job_id: str):
        return public(self.jobs.settle(self.jobs.store.raw(job_id, self._owner(request))))

    @api.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(self, request: Request, job_id: str):
        return public(await asyncio.to_thread(self.jobs.cancel, job_id, self._owner(request)))

    @api.get("/v1/fine_tuning/jobs/{job_id}/events")
    def job_events(self, request: Request, job_id: str, after: Optional[str] = None, limit: int = 20):
        return self.jobs.store.events(job_id, self._owner(request), after, limit)

    @api.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def job_checkpoints(self, request: Request, job_id: str, after: Optional[str] = None, limit: int = 10):
        return self.jobs.store.checkpoints(job_id, self._owner(request), after, limit)

    @api.post("/admin/split")
    async def split(self, request: Request):
        self._admin(request)
        return self.gw.set_split(await _json(request))

    @api.post("/admin/reload")
    async def reload(self, request: Request):
        self._admin(request)
        return await self._go_live(self.gw.read_registry())

    @api.post("/admin/promote")
    async def promote(self, request: Request):
        self._admin(request)
        return await self._go_live(self.gw.promote())

    @api.post("/admin/reject")
    async def reject(self, request: Request):
        self._admin(request)
        return await self._go_live(self.gw.reject())

    @api.post("/admin/revert")
    async def revert(self, request: Request):
        self._admin(request)
        return await self._go_live(self.gw.revert(await _json(request)))


def build_app(root: str, candidate_share: float = 0.5, admin_token: Optional[str] = None, dtype: str = "float32",
              round_id: str = "live", num_replicas: int = 1, ray_actor_options: Optional[dict] = None,
              max_upload_bytes: int = 16 << 20, host: str = "127.0.0.1", rate_per_minute: float = 0,
              jobs_address: Optional[str] = None, jobs_headers: Optional[dict] = None, plan: Optional[TestPlan] = None):
    """The bound application: `serve.run(build_app(root))`. On a GPU cluster pass
    ray_actor_options={"num_gpus": 1} (and num_replicas); here each replica takes half a CPU.
    `plan`: the A/B verdict's test plan (default: evo.ab.verdict.TestPlan())."""
    settings = {"root": root, "candidate_share": candidate_share, "round_id": round_id,
                "state_id": f"{round_id}-{uuid.uuid4().hex[:8]}",
                "admin_token": admin_token if admin_token is not None else os.environ.get("EVO_ADMIN_TOKEN"),
                **({"plan": plan} if plan is not None else {})}
    server = EvoServer.options(num_replicas=num_replicas, **({"ray_actor_options": ray_actor_options}
                                                              if ray_actor_options else {}))
    loopback = host in ("127.0.0.1", "localhost", "::1")
    return server.bind(settings, 4, dtype, max_upload_bytes=max_upload_bytes, loopback=loopback,
                       rate_per_minute=rate_per_minute, jobs_address=jobs_address, jobs_headers=jobs_headers)
