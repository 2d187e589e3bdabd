"""The console page and the lineage tree it draws, and the health check (open to all)."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from evo.http.pages import CONSOLE
from evo.http.state import State

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def console():
    """The console: jobs with live loss curves, upload and start, the lineage tree, the A/B state."""
    return HTMLResponse(CONSOLE)


@router.get("/evo/lineage")
def lineage(request: Request, s: State):
    return s.gw.lineage(s.caller(request, "inference").owner)


@router.get("/health")
def health(s: State):
    """Open to all: whether this replica is up, and what it serves."""
    return {"status": "ok", "aliases": s.gw.aliases}
