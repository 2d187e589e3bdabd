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
                 code: Optional[str] = None, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.headers = headers  # e.g. Retry-After on a 429
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
    max_prompt_chars: int = 8000  # a list of prompts: all of them together; token ids count one each
    max_tokens: int = 256
    default_max_tokens: int = 64
    max_n: int = 4
    max_prompts: int = 32  # prompts in one completions request


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str  # also accepted as a list of text parts, which OpenAI clients send: joined by newlines
    name: Optional[str] = None  # accepted and not rendered: the chat templates have no place for it
    refusal: Optional[str] = None  # an earlier assistant turn's refusal: evo's answers never refuse, so null

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

    def as_model_sees_it(self) -> dict:
        """{"role", "content"}: a developer message is the system message it replaces (OpenAI's
        newer name for the same turn)."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.content}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: Optional[bool] = None
    include_obfuscation: Optional[bool] = None  # accepted: evo's chunks carry no obfuscation padding either way


# Request fields evo refuses unless given as their "off" value (null, or the one value listed): the
# reason is the message of the 400, which names the field. docs/service.md lists them.
REFUSED_UNLESS = {
    "frequency_penalty": ((None, 0, 0.0), "evo does not support frequency penalties"),
    "presence_penalty": ((None, 0, 0.0), "evo does not support presence penalties"),
    "logit_bias": ((None, {}), "evo does not support logit_bias"),
    "tools": ((None, []), "evo does not support tools (function calling)"),
    "tool_choice": ((None, "none"), "evo does not support tools (function calling)"),
    "parallel_tool_calls": ((None, False), "evo does not support tools (function calling)"),
    "functions": ((None, []), "evo does not support functions (function calling)"),
    "function_call": ((None, "none"), "evo does not support functions (function calling)"),
    "audio": ((None,), "evo does not support audio output"),
    "modalities": ((None, ["text"]), "evo answers text only"),
    "prediction": ((None,), "evo does not support predicted outputs"),
    "web_search_options": ((None,), "evo does not support web search"),
    "reasoning_effort": ((None,), "evo's models do no reasoning"),
    "verbosity": ((None,), "evo does not support verbosity"),
    "store": ((None, False), "evo does not store chat completions"),
    "suffix": ((None, ""), "evo does not support insertion (suffix)"),
    "best_of": ((None, 1), "evo does not support best_of above 1"),
}
# Accepted and ignored, with the reason (docs/service.md lists them too).
IGNORED = {
    "metadata": "kept only with store, which evo does not do",
    "service_tier": "evo has one tier",
    "prompt_cache_key": "evo keeps no prompt cache",
    "prompt_cache_retention": "evo keeps no prompt cache",
    "safety_identifier": "evo applies no usage policy per end user",
}


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")  # as OpenAI: an unknown field is a 400 naming it
    model: str = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=0, description="None: the server's default, within its limit")
    temperature: Optional[float] = Field(1.0, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(1.0, gt=0.0, le=1.0)
    stop: Optional[Union[str, list[str]]] = None
    user: Optional[str] = None
    n: Optional[int] = Field(1, ge=1)
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    # torch.manual_seed's range: a seed outside it is refused here, before the request joins a batch
    seed: Optional[int] = Field(None, ge=-(1 << 63), lt=1 << 64)
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    logit_bias: Optional[dict] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("'stop' takes up to 4 non-empty strings")
        return stops

    @field_validator("temperature", "top_p", "n", "stream", mode="after")
    @classmethod
    def _null_is_default(cls, v, info):
        return {"temperature": 1.0, "top_p": 1.0, "n": 1, "stream": False}[info.field_name] if v is None else v

    def stops(self) -> list[str]:
        return list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    response_format: Optional[dict] = None
    tools: Optional[list] = None
    tool_choice: Optional[Union[str, dict]] = None
    parallel_tool_calls: Optional[bool] = None
    functions: Optional[list] = None
    function_call: Optional[Union[str, dict]] = None
    audio: Optional[dict] = None
    modalities: Optional[list[str]] = None
    prediction: Optional[dict] = None
    web_search_options: Optional[dict] = None
    reasoning_effort: Optional[str] = None
    verbosity: Optional[str] = None
    store: Optional[bool] = None
    metadata: Optional[dict] = None
    service_tier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    prompt_cache_retention: Optional[str] = None
    safety_identifier: Optional[str] = None

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, v):
        if v[-1].role == "assistant":
            raise ValueError("the last message must not be the assistant's: there is nothing to answer")
        return v

    def prompt_chars(self) -> int:
        return sum(len(m.content) for m in self.messages)

    def model_messages(self) -> list[dict]:
        return [m.as_model_sees_it() for m in self.messages]

    def logprobs_wanted(self) -> Optional[dict]:
        """What the pool reports per token: None, or {"top": k alternatives, "echo": False}."""
        return {"top": self.top_logprobs or 0, "echo": False} if self.logprobs else None


class CompletionRequest(_Common):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    echo: Optional[bool] = False
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, v):
        if isinstance(v, list) and (not v or any(isinstance(p, list) and not p for p in v)):
            raise ValueError("an empty list is no prompt")
        return v

    def prompts(self) -> list:
        """The prompts, each text or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        return [p] if isinstance(p[0], int) else list(p)

    def prompt_chars(self) -> int:
        return sum(len(p) for p in self.prompts())

    def logprobs_wanted(self) -> Optional[dict]:
        if self.logprobs is None and not self.echo:
            return None
        return {"top": self.logprobs, "echo": bool(self.echo)}


def _validation_error(e: ValidationError) -> APIError:
    first = e.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if first["type"] == "extra_forbidden":  # OpenAI's words for it
        where = ".".join(loc)
        return APIError(400, f"Unrecognized request argument supplied: {where} (evo does not support it)", where)
    if first["type"].startswith("union") or (len(loc) > 1 and loc[0] == "prompt"):
        loc = loc[:1]
    where = ".".join(loc) or "body"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
    return APIError(400, f"'{where}': {msg}{more}", param=where)


def _refuse_unsupported(body: dict) -> None:
    """A 400 for the first field evo does not honour given a value it would have to honour."""
    for name, (off, why) in REFUSED_UNLESS.items():
        if name in body and body[name] not in off:
            raise APIError(400, f"'{name}' is {body[name]!r}: {why}", name, "unsupported_parameter")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        kind = fmt.get("type") if isinstance(fmt, dict) else fmt
        raise APIError(400, f"'response_format' of type {kind!r}: evo does not support structured output (it "
                            "answers text only)", "response_format", "unsupported_parameter")


def parse_request(kind: type[_Common], body: object, limits: Limits) -> _Common:
    """Validate a decoded JSON body; APIError(400) naming the field otherwise."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        req = kind.model_validate(body)
    except ValidationError as e:
        raise _validation_error(e) from None
    _refuse_unsupported(body)
    chat = isinstance(req, ChatRequest)
    if req.prompt_chars() > limits.max_prompt_chars:
        raise APIError(400, f"prompt has {req.prompt_chars()} characters, over the limit of {limits.max_prompt_chars}",
                       "messages" if chat else "prompt")
    if chat and req.max_completion_tokens is not None:  # it takes precedence, as OpenAI's reference says
        req.max_tokens, name = req.max_completion_tokens, "max_completion_tokens"
    else:
        name = "max_tokens"
    if req.max_tokens is None:
        req.max_tokens = min(limits.default_max_tokens, limits.max_tokens)
    if req.max_tokens > limits.max_tokens:
        raise APIError(400, f"'{name}' is {req.max_tokens}, over the limit of {limits.max_tokens}", name)
    if req.max_tokens == 0 and (chat or not req.echo):
        raise APIError(400, f"'{name}' is 0: at least 1 (0 only with echo, on completions)", name)
    if req.n > limits.max_n:
        raise APIError(400, f"'n' is {req.n}, over the limit of {limits.max_n}", "n")
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "'stream_options' is only allowed when 'stream' is true", "stream_options")
    if chat and req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs")
    if not chat:
        if len(req.prompts()) > limits.max_prompts:
            raise APIError(400, f"'prompt' is a list of {len(req.prompts())} prompts, over the limit of "
                                f"{limits.max_prompts}", "prompt")
    if req.stream and req.logprobs_wanted() is not None:
        what = "logprobs" if req.logprobs is not None and req.logprobs is not False else "echo"
        raise APIError(400, f"'{what}' with 'stream': evo reports logprobs and echoes prompts only in whole "
                            "answers (send stream: false)", what, "unsupported_parameter")
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


def _chat_logprobs(lp: Optional[dict]) -> Optional[dict]:
    """The pool's per-token report as a chat choice's `logprobs` (null when not asked)."""
    if lp is None:
        return None

    def entry(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**entry(t, v), "top_logprobs": [entry(a, w) for a, w in alts or []]}
                        for t, v, alts in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"])],
            "refusal": None}


def _completion_logprobs(lp: Optional[dict]) -> Optional[dict]:
    """... as a completion choice's legacy `logprobs`: tokens, token_logprobs, top_logprobs (a
    token -> log-probability object per position; null where the first echoed token follows
    nothing), text_offset."""
    if lp is None:
        return None
    return {"tokens": lp["tokens"], "token_logprobs": lp["token_logprobs"],
            "top_logprobs": [None if alts is None else dict(alts) for alts in lp["top_logprobs"]],
            "text_offset": lp["text_offset"]}


def _output(o) -> dict:
    """A pool output as a dict (also from the older (text, finish_reason, completion_tokens))."""
    if isinstance(o, dict):
        return o
    text, finish, tokens = o
    return {"text": text, "finish_reason": finish, "completion_tokens": tokens, "logprobs": None}


def chat_response(rid: str, model: str, outputs: list, prompt_tokens: int, arm: str) -> dict:
    """outputs: the pool's (`ModelPool.run`): {"text", "finish_reason", "completion_tokens", "logprobs"}."""
    outs = [_output(o) for o in outputs]
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": o["text"], "refusal": None},
                     "logprobs": _chat_logprobs(o["logprobs"]), "finish_reason": o["finish_reason"]}
                    for i, o in enumerate(outs)],
        "usage": usage(prompt_tokens, sum(o["completion_tokens"] for o in outs)),
        "evo": {"arm": arm},
    }


def completion_response(rid: str, model: str, outputs: list, prompt_tokens: int, arm: str) -> dict:
    outs = [_output(o) for o in outputs]
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "text": o["text"], "finish_reason": o["finish_reason"],
                     "logprobs": _completion_logprobs(o["logprobs"])} for i, o in enumerate(outs)],
        "usage": usage(prompt_tokens, sum(o["completion_tokens"] for o in outs)),
        "evo": {"arm": arm},
    }
