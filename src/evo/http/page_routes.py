"""The console page and the lineage tree it draws, the health check (open to all), and FastAPI's
API docs where the admin turned them on (`evo serve --api-docs`)."""

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from evo.http.pages import CONSOLE
from evo.http.state import ServerState, State
from evo.openai_api import APIError

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def console():
    """The console: jobs with live loss curves, upload and start, the lineage tree, the A/B state."""
    return HTMLResponse(CONSOLE)


@router.get("/evo/lineage")
def lineage(request: Request, s: State):
    return s.gw.lineage(s.caller(request, "inference").owner)


@router.get("/health")
def health(request: Request, s: State):
    """Open to all: whether this replica is up; what it serves (the aliases' shas) only to a caller
    the server would answer (a live key, or an open server's local user)."""
    try:
        s.caller(request, "inference")
    except APIError:
        return {"status": "ok"}
    return {"status": "ok", "aliases": s.gw.aliases}


def _docs_on(request: Request, s: ServerState) -> None:
    if not s.api_docs:
        raise APIError(404, f"no route GET {request.url.path} on this server: the API docs are off "
                            "(`evo serve --api-docs` turns them on)")


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, s: State):
    _docs_on(request, s)
    return request.app.openapi()


@router.get("/docs", include_in_schema=False)
def docs(request: Request, s: State):
    _docs_on(request, s)
    return get_swagger_ui_html(openapi_url="/openapi.json", title="evo API")


@router.get("/redoc", include_in_schema=False)
def redoc(request: Request, s: State):
    _docs_on(request, s)
    return get_redoc_html(openapi_url="/openapi.json", title="evo API")
