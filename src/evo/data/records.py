"""A training record in evo's canonical form, and validation of one JSONL object into it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Optional

from evo.atomic import sha256_bytes

ROLES = ("system", "user", "assistant")


class RecordError(ValueError):
    """Why one JSONL object is not a usable record."""


@dataclass(frozen=True)
class Record:
    """One example. `kind` is the shape it came in: completion, chat, text or preference.

    For chat, `messages` holds the conversation as JSON and the last assistant turn is the
    completion; for text, the whole text is the completion and the prompt is empty. For preference,
    `messages` holds the prompt's conversation (ending in a user turn), `completion` the preferred
    answer and `rejected` the non-preferred one; `rejected` is empty for every other kind.
    """

    kind: str
    prompt: str
    completion: str
    messages: str = ""
    category: str = ""
    rid: str = ""
    rejected: str = ""

    @property
    def sha(self) -> str:
        """Content hash: what the record says, not its id or category (a record without `rejected`
        hashes as it did before the field existed)."""
        said = [self.kind, self.prompt, self.completion, self.messages] + ([self.rejected] if self.rejected else [])
        body = json.dumps(said, ensure_ascii=False)
        return sha256_bytes(body.encode("utf-8"))

    def n_chars(self) -> int:
        return len(self.prompt) + len(self.completion) + len(self.messages) + len(self.rejected)

    def to_row(self) -> dict[str, str]:
        return asdict(self)

    def chat(self) -> Optional[list[dict[str, str]]]:
        return json.loads(self.messages) if self.messages else None


def _opt_str(obj: dict, key: str) -> str:
    val = obj.get(key, "")
    if val is None:
        return ""
    if isinstance(val, (int, float)) and key == "id" and not isinstance(val, bool):
        return str(val)
    if not isinstance(val, str):
        raise RecordError(f"'{key}' must be a string, got {type(val).__name__}")
    return val


def _text_field(obj: dict, key: str, allow_empty: bool = False) -> str:
    val = obj[key]
    if not isinstance(val, str):
        raise RecordError(f"'{key}' must be a string, got {type(val).__name__}")
    if not allow_empty and not val.strip():
        raise RecordError(f"'{key}' is empty")
    return val


def _check_messages(msgs: Any) -> list[dict[str, str]]:
    if not isinstance(msgs, list) or not msgs:
        raise RecordError("'messages' must be a non-empty list")
    clean = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RecordError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RecordError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise RecordError(f"messages[{i}].content must be a string")
        if role == "system" and i != 0:
            raise RecordError(f"messages[{i}]: a system message may only come first")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] != "assistant":
        raise RecordError("the last message must be the assistant's (it is what is learned)")
    if not clean[-1]["content"].strip():
        raise RecordError("the last assistant message is empty")
    if not any(m["role"] == "user" for m in clean):
        raise RecordError("'messages' has no user message")
    return clean


def render_chat(messages: list[dict[str, str]]) -> tuple[str, str]:
    """Plain-text rendering for tokenizers without a chat template: (prompt, completion)."""
    context = "".join(f"{m['role']}: {m['content']}\n" for m in messages[:-1])
    return context + "assistant:", " " + messages[-1]["content"]


def parse_record(obj: Any) -> Record:
    """Validate one decoded JSON value; raises RecordError with the reason."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    category, rid = _opt_str(obj, "category"), _opt_str(obj, "id")
    if "messages" in obj:
        msgs = _check_messages(obj["messages"])
        prompt, completion = render_chat(msgs)
        return Record("chat", prompt, completion, json.dumps(msgs, ensure_ascii=False), category, rid)
    if "prompt" in obj or "completion" in obj:
        if "prompt" not in obj or "completion" not in obj:
            missing = "completion" if "prompt" in obj else "prompt"
            raise RecordError(f"has no '{missing}' (prompt/completion records need both)")
        prompt = _text_field(obj, "prompt", allow_empty=True)
        return Record("completion", prompt, _text_field(obj, "completion"), "", category, rid)
    if "text" in obj:
        return Record("text", "", _text_field(obj, "text"), "", category, rid)
    raise RecordError("unknown shape: expected 'prompt' and 'completion', 'messages', or 'text'")
