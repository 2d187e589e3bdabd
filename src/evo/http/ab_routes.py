"""A/B: side-by-side answers and the votes on them, thumbs, the round's statistics, the leaderboard,
and the rating page with its queue of prompts."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from evo.ab.rating_queue import RatingQueue
from evo.ab.tally import prompt_key
from evo.http.inference_routes import answer, sampling_of
from evo.http.pages import RATE
from evo.http.state import State, read_json
from evo.openai_api import APIError, ChatRequest, CompletionRequest, parse_request

router = APIRouter()


@router.post("/v1/side_by_side")
async def side_by_side(request: Request, s: State):
    """Both arms answer one prompt, labelled a and b at random, for a pairwise rating."""
    s.caller(request, "inference")
    s.follow()
    if s.gw.registry_changed():  # a candidate staged a moment ago is rated now, not after the next follow
        await s.go_live(s.gw.read_registry())
    raw = await read_json(request)
    kind = ChatRequest if isinstance(raw, dict) and "messages" in raw else CompletionRequest
    req = parse_request(kind, {"model": "evo", **raw} if isinstance(raw, dict) else raw, s.gw.settings.limits)
    pair_id, targets = s.gw.open_pair(prompt_key(raw))
    sampling = sampling_of(req)
    a, b = await asyncio.gather(answer(s, req, sampling, targets["a"]), answer(s, req, sampling, targets["b"]))
    for ans in (a, b):  # blind: which arm answered is revealed only after the rating
        ans["model"] = "evo"
        ans.pop("evo")
    return {"pair_id": pair_id, "a": a, "b": b,
            "rate_at": "/v1/feedback/pairwise with {pair_id, preferred: a | b | tie}"}


@router.post("/v1/feedback/pairwise")
async def pairwise(request: Request, s: State):
    s.caller(request, "inference")
    return s.gw.record_preference(await read_json(request))


@router.post("/v1/feedback")
async def thumbs(request: Request, s: State):
    s.caller(request, "inference")
    return s.gw.record_feedback(await read_json(request), "thumbs")


@router.get("/ab/stats")
def stats(request: Request, s: State):
    s.caller(request, "inference")
    return s.gw.stats()


@router.get("/rate", response_class=HTMLResponse)
def rate_page():
    """Blind side-by-side rating by a person, then the reveal; the leaderboard."""
    return HTMLResponse(RATE)


@router.get("/evo/leaderboard")
def leaderboard(request: Request, s: State):
    s.caller(request, "inference")
    return s.gw.leaderboard()


@router.get("/evo/rate/next")
def rate_next(request: Request, s: State):
    s.caller(request, "inference")
    prompt = RatingQueue(s.gw.settings.root).next(s.gw.feedback.tally()[0].prompts)
    if prompt is None:
        raise APIError(404, "no queued prompt is waiting for a rating; type one", kind="not_found_error")
    return {"prompt": prompt}


@router.post("/evo/rate/queue")
async def rate_queue(request: Request, s: State):
    s.admin(request)
    return RatingQueue(s.gw.settings.root).add(await read_json(request))
