"""Inference: OpenAI's chat and text completions (whole or streamed) and the models.

A request is validated once (`parse_request`), its sampling settings become one `Sampling`, and the
replica's pool answers it: batched with others for any generation of its base and the same settings (`answer_batch`), or
token by token when it streams one choice of one prompt.
"""

import asyncio
import json
import time
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from evo.http.state import ServerState, State, read_json
from evo.inference.gateway import Target
from evo.model.generate import Sampling
from evo.openai_api import (
    ChatRequest,
    CompletionRequest,
    _output,
    chat_response,
    completion_response,
    new_id,
    parse_request,
    usage,
)

router = APIRouter()


def sampling_of(req) -> Sampling:
    """A chat or completion request's sampling settings, as generation takes them."""
    return Sampling(req.max_tokens, req.temperature, req.top_p, req.n, req.seed)


def pool_request(req, sampling: Sampling, target: Target) -> dict:
    """What the pool answers (`ModelPool.run`, `ModelPool.stream`): the model, the settings, the
    stop strings, the messages or the prompts, and the logprobs asked for."""
    chat = isinstance(req, ChatRequest)
    payload = {"messages": req.model_messages()} if chat else {"prompts": req.prompts()}
    return {"sha": target.sha, "sampling": sampling, "stops": req.stops(), "logprobs": req.logprobs_wanted(),
            **payload}


def said_of(req, text: Optional[str] = None) -> dict:
    """What a request gave the model, role and content of each message (or its prompt), and the
    answer's text when it is known: kept in the A/B log so feedback can become training pairs."""
    given = ({"messages": [{"role": m.role, "content": m.content} for m in req.messages]} if isinstance(req, ChatRequest)
             else {"prompt": req.prompt})
    return {"input": given, **({"text": text} if text is not None else {})}


def _chunk(head: dict, chat: bool, index: int, text: str, finish: Optional[str], first: bool = False) -> str:
    """One server-sent event in OpenAI's chunk shape (`head`: id, object, created, model, evo, and
    usage: null when the request asked for a usage chunk)."""
    if chat:
        choice = {"index": index, "delta": {**({"role": "assistant"} if first else {}), "content": text},
                  "logprobs": None, "finish_reason": finish}
    else:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
    return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"


def _usage_chunk(head: dict, use: dict) -> str:
    """The chunk `stream_options.include_usage` asks for, before [DONE]: empty choices, the usage."""
    return f"data: {json.dumps({**head, 'choices': [], 'usage': use})}\n\n"


def _head(rid: str, chat: bool, model: str, created: int, evo: dict, with_usage: bool) -> dict:
    head = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "evo": evo}
    return {**head, "usage": None} if with_usage else head


def _stream_whole(body: dict, with_usage: bool) -> StreamingResponse:
    """Server-sent events for n > 1 or several prompts: each choice arrives whole, in one chunk."""
    chat = body["object"] == "chat.completion"
    head = _head(body["id"], chat, body["model"], body["created"], body["evo"], with_usage)

    def events():
        for c in body["choices"]:
            text = c["message"]["content"] if chat else c["text"]
            yield _chunk(head, chat, c["index"], text, c["finish_reason"], first=True)
        if with_usage:
            yield _usage_chunk(head, body["usage"])
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def answer(s: ServerState, req, sampling: Sampling, target: Target, asker: str = "") -> dict:
    """One OpenAI-shaped answer from `target`, logged as a response of its arm (`asker`: the tenant key
    that asked, "" for the shared line's callers)."""
    chat = isinstance(req, ChatRequest)
    result = await s.answer_batch(pool_request(req, sampling, target))
    rid = new_id("chatcmpl" if chat else "cmpl")
    outputs = result["outputs"]
    s.gw.record_response(rid, target, req.user, said_of(req, _output(outputs[0])["text"] if len(outputs) == 1 else None),
                         asker)
    build = chat_response if chat else completion_response
    body = build(rid, target.name, result["outputs"], result["prompt_tokens"], target.arm)
    body["evo"]["sha"] = target.sha
    return body


def _stream_tokens(s: ServerState, req, sampling: Sampling, target: Target, asker: str = "") -> StreamingResponse:
    """Server-sent events, token by token, for one choice."""
    chat = isinstance(req, ChatRequest)
    rid, created = new_id("chatcmpl" if chat else "cmpl"), int(time.time())
    head = _head(rid, chat, target.name, created, {"arm": target.arm, "sha": target.sha}, req.include_usage())
    prompt_tokens, deltas = s.pool.stream(pool_request(req, sampling, target))
    s.gw.record_response(rid, target, req.user, said_of(req), asker)

    def events():
        first = True
        for d in deltas:
            if d.text or d.finish_reason:
                yield _chunk(head, chat, 0, d.text, d.finish_reason, first)
                first = False
            if d.finish_reason and req.include_usage():
                yield _usage_chunk(head, usage(prompt_tokens, d.completion_tokens))
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def _answer(s: ServerState, request: Request, kind: type):
    caller = s.caller(request, "inference")
    s.follow()
    req = parse_request(kind, await read_json(request), s.gw.settings.limits)
    target = s.gw.resolve(req.model, req.user or request.headers.get("x-evo-user"), caller.owner)
    sampling = sampling_of(req)
    await asyncio.to_thread(s.pool.check, pool_request(req, sampling, target))  # bad token ids: 400 before the batch
    one_prompt = isinstance(req, ChatRequest) or len(req.prompts()) == 1
    if req.stream and req.n == 1 and one_prompt:
        return await asyncio.to_thread(_stream_tokens, s, req, sampling, target, caller.owner or "")
    body = await answer(s, req, sampling, target, caller.owner or "")
    if req.stream:
        return _stream_whole(body, req.include_usage())
    return Response(json.dumps(body), media_type="application/json")  # already plain JSON: skip FastAPI's encoder


@router.post("/v1/chat/completions")
async def chat(request: Request, s: State):
    return await _answer(s, request, ChatRequest)


@router.post("/v1/completions")
async def completions(request: Request, s: State):
    return await _answer(s, request, CompletionRequest)


@router.get("/v1/models")
def models(request: Request, s: State):
    return s.gw.model_list(s.caller(request, "inference").owner, s.auth.names())


@router.get("/v1/models/{model_id:path}")
def model(model_id: str, request: Request, s: State):
    """One model of the list, as the caller's list shows it (404 for one it does not show)."""
    return s.gw.model(model_id, s.caller(request, "inference").owner, s.auth.names())


@router.delete("/v1/models/{model_id:path}")
def delete_model(model_id: str, request: Request, s: State):
    """A fine-tuned model on the caller's branch (an admin: any), withdrawn (see `Gateway.delete_model`)."""
    return s.gw.delete_model(model_id, s.caller(request, "fine-tune").owner)
