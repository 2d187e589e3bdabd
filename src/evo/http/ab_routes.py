"""A/B: side-by-side answers and the votes and skips on them, thumbs, the rounds and their
statistics, the leaderboard, and the rating page with its queue of prompts."""

import asyncio
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from evo.ab.rating_queue import RatingQueue
from evo.ab.tally import prompt_key
from evo.http.inference_routes import answer, said_of, sampling_of
from evo.http.pages import RATE
from evo.http.state import ServerState, State, read_json
from evo.openai_api import APIError, ChatRequest, CompletionRequest, parse_request

router = APIRouter()


def model_input(req) -> dict:
    """The part of a parsed request the model is given: its messages (content parts already joined)
    or its prompt."""
    return {"messages": [m.model_dump() for m in req.messages]} if isinstance(req, ChatRequest) else {"prompt": req.prompt}


def key_of(s: ServerState, sha: str, what: dict) -> str:
    """The prompt key of `what` as model `sha` is given it: through its tokenizer's chat template
    (every generation of a lineage shares its base's tokenizer, so the champion's stands for both).
    It may load the model: call it on a thread."""
    return prompt_key(s.pool.render(sha, what))


async def follow_now(s: ServerState) -> None:
    """Take an alias move made elsewhere now, not after the next follow: a candidate staged a moment
    ago is rated at once, and a vote never lands in a round that has just ended."""
    s.follow()
    if s.gw.registry_changed():
        await s.go_live(s.gw.read_registry())


@router.post("/v1/side_by_side")
async def side_by_side(request: Request, s: State):
    """Both arms answer one prompt, labelled a and b at random, for a pairwise rating."""
    asker = s.caller(request, "inference").owner or ""  # a tenant's prompt: its own, never the shared line's data
    await follow_now(s)
    raw = await read_json(request)
    kind = ChatRequest if isinstance(raw, dict) and "messages" in raw else CompletionRequest
    req = parse_request(kind, {"model": "evo", **raw} if isinstance(raw, dict) else raw, s.gw.settings.limits)
    pair_round = s.gw.pair_round()  # 409 without a candidate, before any model is asked
    key = await asyncio.to_thread(key_of, s, pair_round.champion, model_input(req))
    pair_id, targets = s.gw.open_pair(key, pair_round)
    sampling = sampling_of(req)
    a, b = await asyncio.gather(answer(s, req, sampling, targets["a"], asker), answer(s, req, sampling, targets["b"], asker))
    s.gw.record_answers(pair_id, pair_round, said_of(req), _first_text(a), _first_text(b), asker)  # a vote's training pair
    for ans in (a, b):  # blind: which arm answered is shown only once the round is decided
        ans["model"] = "evo"
        ans.pop("evo")
    return {"pair_id": pair_id, "a": a, "b": b,
            "rate_at": "/v1/feedback/pairwise with {pair_id, preferred: a | b | tie | both_bad}, "
                       "or /v1/feedback/skip with {pair_id} to pass it over"}


def _first_text(body: dict) -> str:
    choice = body["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


@router.post("/v1/feedback/pairwise")
async def pairwise(request: Request, s: State):
    s.caller(request, "inference")
    await follow_now(s)
    return s.gw.record_preference(await read_json(request))


@router.post("/v1/feedback/skip")
async def skip(request: Request, s: State):
    """{"pair_id"}: a pair shown and passed over without a vote."""
    s.caller(request, "inference")
    await follow_now(s)
    return s.gw.record_skip(await read_json(request))


@router.post("/v1/feedback")
async def thumbs(request: Request, s: State):
    voter = s.caller(request, "inference").key_id
    return s.gw.record_thumbs(await read_json(request), voter)


def sees_open_results(request: Request, s: ServerState) -> bool:
    """Whether this caller may see an open round's results per arm: an admin (the admin token, a key
    of scope admin, or the one user of an open server). Anyone else with an inference key sees them
    once the round is decided, so that nobody rates knowing which arm is ahead."""
    try:
        s.gw.check_admin(request.headers.get("authorization"))
        return True
    except APIError:
        return s.caller(request, "inference").can("admin")


@router.get("/ab/stats")
def stats(request: Request, s: State, round: Optional[str] = None):
    """The current round's statistics, or those of `?round=<id>` (`/ab/rounds` lists them); an open
    round's wins, thumbs and verdict reason only to an admin (`sees_open_results`)."""
    return s.gw.stats(round, per_arm=sees_open_results(request, s))


@router.get("/ab/rounds")
def rounds(request: Request, s: State):
    s.caller(request, "inference")
    return s.gw.rounds()


@router.get("/rate", response_class=HTMLResponse)
def rate_page():
    """Blind side-by-side rating by a person (a pair passed over is recorded as skipped); the
    leaderboard of the decided rounds."""
    return HTMLResponse(RATE)


@router.get("/evo/leaderboard")
def leaderboard(request: Request, s: State):
    s.caller(request, "inference")
    return s.gw.leaderboard()


@router.get("/evo/rate/next")
async def rate_next(request: Request, s: State):
    """The first queued prompt the current round has neither a counted vote nor a skip on."""
    s.caller(request, "inference")
    await follow_now(s)
    now = s.gw.pair_round()
    tally = s.gw.feedback.tally(now.id)[0]

    def asked(prompt: str) -> str:  # the key the rating page's request for it will have
        return key_of(s, now.champion, {"messages": [{"role": "user", "content": prompt}]})

    prompt = await asyncio.to_thread(RatingQueue(s.gw.settings.root).next, tally.prompts | tally.skipped_prompts, asked)
    if prompt is None:
        raise APIError(404, "no queued prompt is waiting for a rating; type one", kind="not_found_error")
    return {"prompt": prompt}


@router.post("/evo/rate/queue")
async def rate_queue(request: Request, s: State):
    s.admin(request)
    return RatingQueue(s.gw.settings.root).add(await read_json(request))
