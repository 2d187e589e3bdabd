"""OpenAI-compatible request and response shapes, with evo's limits and clear 4xx messages."""

from __future__ import annotations

import time
import uuid
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# The error types OpenAI's API answers with, and the one each status gets when a caller names none
# (or names a code instead, such as "request_too_large").
OPENAI_TYPES = ("invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                "rate_limit_error", "server_error")
_TYPE_OF_STATUS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


class APIError(Exception):
    """A request the server refuses: HTTP status and a message that says what to fix.

    Its body is OpenAI's: {"error": {"message", "type", "param", "code"}}, `type` one of
    OPENAI_TYPES, `code` a short string (or null). A `kind` that is not an OpenAI type is taken as
    the code, and the type follows from the status."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, kind: Optional[str] = None,
                 code: Optional[str] = None):
        super().__init__(message)
        if kind is not None and kind not in OPENAI_TYPES:
            kind, code = None, code or kind
        if kind is None:
            kind = "server_error" if status >= 500 else _TYPE_OF_STATUS.get(status, "invalid_request_error")
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def check_metadata(value: object, param: str = "metadata") -> None:
    """OpenAI's `metadata`: null, or an object of at most 16 string pairs, keys up to 64 characters
    and values up to 512; APIError(400) naming the pair otherwise."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise APIError(400, f"'{param}' must be an object of string keys and values, not {type(value).__name__}", param)
    if len(value) > 16:
        raise APIError(400, f"'{param}' has {len(value)} pairs, over the limit of 16", param)
    for k, v in value.items():
        if len(k) > 64:
            raise APIError(400, f"'{param}' key {k[:64]!r}... has {len(k)} characters, over the limit of 64", param)
        if not isinstance(v, str):
            raise APIError(400, f"'{param}.{k}' must be a string, not {type(v).__name__}", f"{param}.{k}")
        if len(v) > 512:
            raise APIError(400, f"'{param}.{k}' has {len(v)} characters, over the limit of 512", f"{param}.{k}")


class Limits(BaseModel):
    max_prompt_chars: int = 8000
    max_tokens: int = 256
    default_max_tokens: int = 64
    max_n: int = 4


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str  # also accepted as a list of text parts, which OpenAI clients send: joined by newlines

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, v):
        """[{"type": "text", "text": ...}, ...] -> one string; any other part (image, audio, file) is refused."""
        if not isinstance(v, list):
            return v
        texts = []
        for i, part in enumerate(v):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                what = f"of type {kind!r}" if kind else "not a {'type': 'text', 'text': ...} object"
                raise ValueError(f"content part {i} is {what}: this server answers text only")
            if not isinstance(part.get("text"), str):
                raise ValueError(f"content part {i} (type 'text') needs a string 'text'")
            texts.append(part["text"])
        if not texts:
            raise ValueError("content is an empty list of parts")
        return "\n".join(texts)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields evo does not use (logprobs, ...)
    model: str = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1, description="None: the server's default, within its limit")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: Optional[Union[str, list[str]]] = None
    user: Optional[str] = None
    n: int = Field(1, ge=1)
    stream: bool = False
    # torch.manual_seed's range: a seed outside it is refused here, before the request joins a batch
    seed: Optional[int] = Field(None, ge=-(1 << 63), lt=1 << 64)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("'stop' takes up to 4 non-empty strings")
        return stops

    def stops(self) -> list[str]:
        return list(self.stop or [])


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, v):
        if v[-1].role == "assistant":
            raise ValueError("the last message must not be the assistant's: there is nothing to answer")
        return v

    def prompt_chars(self) -> int:
        return sum(len(m.content) for m in self.messages)


class CompletionRequest(_Common):
    prompt: str

    def prompt_chars(self) -> int:
        return len(self.prompt)


def parse_request(kind: type[_Common], body: object, limits: Limits) -> _Common:
    """Validate a decoded JSON body; APIError(400) naming the field otherwise."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        req = kind.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        msg = first["msg"].removeprefix("Value error, ")
        more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
        raise APIError(400, f"'{where}': {msg}{more}", param=where) from None
    if req.prompt_chars() > limits.max_prompt_chars:
        raise APIError(400, f"prompt has {req.prompt_chars()} characters, over the limit of {limits.max_prompt_chars}",
                       "messages" if isinstance(req, ChatRequest) else "prompt")
    if req.max_tokens is None:
        req.max_tokens = min(limits.default_max_tokens, limits.max_tokens)
    if req.max_tokens > limits.max_tokens:
        raise APIError(400, f"'max_tokens' is {req.max_tokens}, over the limit of {limits.max_tokens}", "max_tokens")
    if req.n > limits.max_n:
        raise APIError(400, f"'n' is {req.n}, over the limit of {limits.max_n}", "n")
    return req


def page(items: list[dict], after: Optional[str], limit: int) -> dict:
    """One page of an OpenAI list: the items after the one with id `after`, at most `limit` of them."""
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    shown = items[: max(1, limit)]
    return {"object": "list", "data": shown, "has_more": len(items) > len(shown),
            "first_id": shown[0]["id"] if shown else None, "last_id": shown[-1]["id"] if shown else None}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, outputs: list, prompt_tokens: int, arm: str) -> dict:
    """outputs: [(text, finish_reason, completion_tokens)]."""
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f}
                    for i, (t, f, _) in enumerate(outputs)],
        "usage": usage(prompt_tokens, sum(c for _, _, c in outputs)),
        "evo": {"arm": arm},
    }


def completion_response(rid: str, model: str, outputs: list, prompt_tokens: int, arm: str) -> dict:
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "text": t, "finish_reason": f, "logprobs": None}
                    for i, (t, f, _) in enumerate(outputs)],
        "usage": usage(prompt_tokens, sum(c for _, _, c in outputs)),
        "evo": {"arm": arm},
    }
