"""Admin: the live split, and promote (the candidate, or a generation named, a tenant's included),
reject, revert and reload, each applied on this replica at once (the others follow through the
lineage root). Every route needs the admin token or a key with
scope admin (`AdminState` checks it before the route runs)."""

from fastapi import APIRouter, Request

from evo.http.state import AdminState, read_json

router = APIRouter()


@router.post("/admin/split")
async def split(request: Request, s: AdminState):
    return s.gw.set_split(await read_json(request))


@router.post("/admin/reload")
async def reload(s: AdminState):
    return await s.go_live(s.gw.read_registry())


@router.post("/admin/promote")
async def promote(request: Request, s: AdminState):
    """No body: the candidate. {"gen": "gen-N"}: that generation, also a tenant's (gated against the
    champion: `evo.lineage.decisions.Decisions.promote`)."""
    return await s.go_live(s.gw.promote(await read_json(request)))


@router.post("/admin/reject")
async def reject(s: AdminState):
    return await s.go_live(s.gw.reject())


@router.post("/admin/revert")
async def revert(request: Request, s: AdminState):
    return await s.go_live(s.gw.revert(await read_json(request)))
