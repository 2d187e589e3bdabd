"""The Ray Serve deployment of evo's HTTP app, and `build_app` to bind it.

One deployment is both the HTTP ingress (OpenAI-compatible) and the model holder: the gateway
resolves a request to an arm and a model sha, and the replica's own pool answers it, batching
requests for any generations of one base with the same settings (each row its own adapters).
Keeping the models in the ingress replica saves a handle hop (about 3 ms here) on every request.

The routes are one `APIRouter` per resource, mounted here: inference (`inference_routes`), A/B votes
and the rating page (`ab_routes`), files and fine-tuning jobs (`files_jobs_routes`), admin
(`admin_routes`), the console and health (`page_routes`). Each route gets the replica's
`ServerState` (`evo.http.state`), which `EvoServer` builds.
"""


import asyncio
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException

from evo.ab.export import follow_feedback
from evo.ab.verdict import TestPlan
from evo.atomic import read_json
from evo.config import ABConfig, ConfigError, RayWaitsConfig
from evo.finetune.files import FileStore
from evo.finetune.submit import JobService, RayJobs
from evo.http import ab_routes, admin_routes, files_jobs_routes, inference_routes, page_routes
from evo.http.keys import Authenticator
from evo.http.state import ServerState
from evo.inference.gateway import Gateway, GatewaySettings
from evo.inference.pool import ModelPool
from evo.openai_api import APIError
from evo.ray_start import start_ray
from evo.ray_waits import serve_up
from evo.storage import ensure, is_uri, location, open_root

# Serve's INFO logs and per-request access logs drown evo's progress lines on a console.
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}

# FastAPI's own /docs, /redoc and /openapi.json are off: page_routes serves them only where the admin
# asked (`evo serve --api-docs`), since Swagger's page loads scripts from a CDN on the console's origin.
api = FastAPI(title="evo", description="OpenAI-compatible A/B serving of an evo lineage",
              docs_url=None, redoc_url=None, openapi_url=None)


def _query_names(dependant) -> set[str]:
    """The query parameters a route declares, its dependencies' included (FastAPI's `Dependant` tree)."""
    return {f.alias for f in dependant.query_params} | {n for d in dependant.dependencies for n in _query_names(d)}


def known_query(request: Request) -> None:
    """A query parameter the route does not take is a 400 naming it, so a typo (`?limt=5`) is not
    answered as if it were not there. What a route takes: its declared query parameters, and the
    prefixes its `openapi_extra["x-evo-query-prefixes"]` names (`metadata[` for `jobs.list`'s filter)."""
    route = request.scope.get("route")
    if route is None or not request.query_params or not hasattr(route, "dependant"):
        return
    takes = _query_names(route.dependant)
    prefixes = tuple((getattr(route, "openapi_extra", None) or {}).get("x-evo-query-prefixes", ()))
    for key in request.query_params:
        if key not in takes and not (prefixes and key.startswith(prefixes)):
            raise APIError(400, f"'{key}' is not a query parameter of {request.method} {route.path} (it takes: "
                                f"{', '.join(sorted(takes) + [f'{p}...' for p in prefixes]) or 'none'})", param=key)


# Mounted before @serve.ingress below: it keeps a copy of the app as it is at that moment.
for routes in (inference_routes, ab_routes, files_jobs_routes, admin_routes, page_routes):
    api.include_router(routes.router, dependencies=[Depends(known_query)])

# The pages keep their script and style inline; nothing else loads, and no other site may frame them.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


class PageHeaders:
    """Every answer may not be framed (X-Frame-Options: DENY) nor sniffed; an HTML page also gets
    PAGE_POLICY (the API docs an admin turned on keep Swagger's CDN scripts). Plain ASGI, so a
    streamed answer passes through untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"] in ("/docs", "/redoc")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff")]
                html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                if html and not docs:
                    headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


api.add_middleware(PageHeaders)


@api.exception_handler(APIError)
async def _api_error(_: Request, e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


@api.exception_handler(HTTPException)
async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
    """Starlette's own refusals (no such route, a method the route does not take) in OpenAI's shape."""
    what = {404: f"no route {request.method} {request.url.path} on this server (its API is under /v1)",
            405: f"{request.url.path} does not take {request.method}"}.get(e.status_code, str(e.detail))
    return JSONResponse(APIError(e.status_code, what).body(), e.status_code, headers=e.headers)


@api.exception_handler(RequestValidationError)
async def _bad_parameter(_: Request, e: RequestValidationError) -> JSONResponse:
    """A query or path parameter of the wrong type (`?limit=abc`): 400 naming it, not FastAPI's {"detail"}."""
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"][1:]) or str(first["loc"][0])
    message = f"'{where}': {first['msg']}" + (f", not {first['input']!r}" if "input" in first else "")
    return JSONResponse(APIError(400, message, param=where).body(), 400)


@api.exception_handler(Exception)
async def _unexpected(_: Request, e: Exception) -> JSONResponse:  # a message, never a traceback
    return JSONResponse(APIError(500, f"internal error: {type(e).__name__}", kind="server_error").body(), 500)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, logging_config=SERVE_LOGGING)
@serve.ingress(api)
class EvoServer:
    """The HTTP ingress and the models in one replica: a request is routed, batched and generated
    without a second hop. Scale out with num_replicas; every replica serves both arms, and they
    share the split and the aliases through the lineage root (followed every `follow_s`)."""

    def __init__(self, settings: dict, max_models: int = 4, dtype: str = "float32", follow_s: float = 0.5,
                 max_upload_bytes: int = 16 << 20, loopback: bool = True, rate_per_minute: float = 0,
                 jobs_address: Optional[str] = None, jobs_headers: Optional[dict] = None, api_docs: bool = False):
        gw = Gateway(GatewaySettings(**settings))
        self.state = ServerState(
            gw=gw, files=FileStore(settings["root"], max_upload_bytes),
            auth=Authenticator(settings["root"], loopback, rate_per_minute),
            jobs=JobService(settings["root"], RayJobs(settings["root"], jobs_address, jobs_headers)),
            pool=ModelPool(settings["root"], max_models, dtype), answer_batch=self.answer_batch, follow_s=follow_s,
            api_docs=api_docs)
        self.state.warm([s for s in gw.aliases.values() if s])  # the first request does not wait on a load

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def answer_batch(self, requests: list[dict]) -> list[dict]:
        """Pool requests (`inference_routes.pool_request`) for generations of one base (champion,
        candidate, tenants' models alike) and the same settings share one generate call (on a
        thread, so the replica keeps taking requests meanwhile)."""
        return await asyncio.to_thread(self.state.pool.run, requests)


def build_app(root: str, candidate_share: float = 0.5, admin_token: Optional[str] = None, dtype: str = "float32",
              round_id: str = "live", num_replicas: int = 1, ray_actor_options: Optional[dict] = None,
              max_upload_bytes: int = 16 << 20, host: str = "127.0.0.1", rate_per_minute: float = 0,
              jobs_address: Optional[str] = None, jobs_headers: Optional[dict] = None, plan: Optional[TestPlan] = None,
              api_docs: bool = False):
    """The bound application: `serve.run(build_app(root))`. On a GPU cluster pass
    ray_actor_options={"num_gpus": 1} (and num_replicas); here each replica takes half a CPU.
    `round_id`: the name of the A/B feedback log (`ab/<round_id>.jsonl`); within it each pair of
    champion and candidate shas is a round of its own (`evo.ab.feedback`).
    `plan`: the A/B verdict's test plan (default: evo.ab.verdict.TestPlan()).
    `api_docs`: serve FastAPI's /docs, /redoc and /openapi.json (off by default)."""
    settings = {"root": root, "candidate_share": candidate_share, "log": round_id,
                "state_id": f"{round_id}-{uuid.uuid4().hex[:8]}",
                "admin_token": admin_token if admin_token is not None else os.environ.get("EVO_ADMIN_TOKEN"),
                **({"plan": plan} if plan is not None else {})}
    server = EvoServer.options(num_replicas=num_replicas, **({"ray_actor_options": ray_actor_options}
                                                              if ray_actor_options else {}))
    loopback = host in ("127.0.0.1", "localhost", "::1")
    return server.bind(settings, 4, dtype, max_upload_bytes=max_upload_bytes, loopback=loopback,
                       rate_per_minute=rate_per_minute, jobs_address=jobs_address, jobs_headers=jobs_headers,
                       api_docs=api_docs)


def root_plan(root: str) -> TestPlan:
    """The A/B test plan of the root's config (the `ab:` section of the last `evo run`, kept in
    run_config.json), so that a round on `evo serve` is decided as `evo ab` decides it; evo's
    default plan for a root without a run config."""
    path = open_root(root) / "run_config.json"
    saved = read_json(path) if ensure(path) else {}
    return TestPlan(**ABConfig.model_validate(saved.get("ab") or {}).model_dump())


def cmd_serve(root: str, host: str, port: int, candidate_share: float, replicas: int, rate_limit: float,
              max_upload_mb: float, num_gpus: float, api_docs: bool, export_feedback_every: float,
              address: str | None) -> int:
    """`evo serve`: the app on Ray Serve at host:port, until Ctrl-C. With `export_feedback_every`
    (minutes), this process (the admin's) also exports the rounds' feedback on that schedule
    (`evo.ab.export.follow_feedback`)."""
    where = location(root)  # a URI: each replica follows it through its own mirror
    if export_feedback_every < 0 or (export_feedback_every and is_uri(where)):
        raise ConfigError(f"--export-feedback-every {export_feedback_every:g}: " + (
            "must be >= 0 minutes" if export_feedback_every < 0 else
            f"needs a folder root ({where} is a URI: run `evo feedback export` where the root is a folder)"))
    start_ray(address)
    serve.start(http_options={"host": host, "port": port}, logging_config=SERVE_LOGGING)
    resources = {"num_gpus": num_gpus, "num_cpus": 1} if num_gpus else None
    app = build_app(str(where), candidate_share, num_replicas=replicas, ray_actor_options=resources,
                    max_upload_bytes=int(max_upload_mb * (1 << 20)), host=host, rate_per_minute=rate_limit,
                    api_docs=api_docs, plan=root_plan(str(where)))
    # Replicas Ray can never place (a GPU asked of a CPU cluster) fail the verb with what is pending.
    serve_up(app, "evo", "/", RayWaitsConfig(), lambda m: print(m, flush=True))
    print(f"serving {where} at http://{host}:{port}/v1 (models: evo, champion, candidate, gen-N); "
          "Ctrl-C to stop", flush=True)
    if export_feedback_every:
        print(f"exporting each A/B round's feedback to {where}/feedback/ every {export_feedback_every:g} min",
              flush=True)
        follow_feedback(Path(where), export_feedback_every * 60, threading.Event(), lambda m: print(m, flush=True))
    while True:
        time.sleep(3600)
