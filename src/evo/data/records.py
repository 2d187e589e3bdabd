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


def _turns(msgs: list, key: str) -> list[dict[str, str]]:
    """Each message of `key` as {role, content}: known roles, string content, a system message only first."""
    clean = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RecordError(f"{key}[{i}] must be an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RecordError(f"{key}[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise RecordError(f"{key}[{i}].content must be a string")
        if role == "system" and i != 0:
            raise RecordError(f"{key}[{i}]: a system message may only come first")
        clean.append({"role": role, "content": content})
    return clean


def _check_messages(msgs: Any) -> list[dict[str, str]]:
    if not isinstance(msgs, list) or not msgs:
        raise RecordError("'messages' must be a non-empty list")
    clean = _turns(msgs, "messages")
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


PREFERENCE_KEYS = ("chosen", "rejected", "preferred_output", "non_preferred_output")


def is_preference(record: Record) -> bool:
    """Whether `record` is a preference pair (a prompt with a preferred and a non-preferred answer)."""
    return record.kind == "preference"


def refuse_preference(records, where: str) -> None:
    """Raise RecordError naming the first preference record in `records`: `where` (an SFT mix, an
    eval) would otherwise learn or score it as a plain example and never see its rejected answer."""
    for i, r in enumerate(records):
        if is_preference(r):
            name = f"id {r.rid!r}" if r.rid else f"sha {r.sha[:12]}"
            raise RecordError(f"{where}: record {i} ({name}, category {r.category or 'none'!r}) is a preference "
                              "pair (prompt, chosen, rejected); supervised training and evals take completion, chat "
                              "and text records only (train a preference delta with train.method: dpo)")


def _answer(val: Any, key: str) -> str:
    """One answer of a preference pair: a string (TRL's standard form) or a list holding one
    assistant message (TRL's conversational form, OpenAI's `preferred_output`)."""
    if isinstance(val, list):
        if len(val) != 1 or not isinstance(val[0], dict):
            raise RecordError(f"'{key}' must hold exactly one assistant message, got {len(val)} item(s)")
        m = val[0]
        if m.get("role") != "assistant":
            raise RecordError(f"'{key}'[0].role must be 'assistant', got {m.get('role')!r}")
        if m.get("tool_calls") or m.get("function_call"):
            raise RecordError(f"'{key}'[0] has tool calls; evo trains text answers only")
        val = m.get("content")
        key = f"{key}[0].content"
    if not isinstance(val, str):
        raise RecordError(f"'{key}' must be a string, got {type(val).__name__}")
    if not val.strip():
        raise RecordError(f"'{key}' is empty: both answers of a preference pair need text")
    return val


def _prompt_messages(msgs: Any, key: str) -> list[dict[str, str]]:
    """A preference pair's prompt as a conversation: known roles, a system message only first, and
    a user turn last (the turn both answers reply to)."""
    if not isinstance(msgs, list) or not msgs:
        raise RecordError(f"'{key}' must be a non-empty list of messages")
    clean = _turns(msgs, key)
    if clean[-1]["role"] != "user":
        raise RecordError(f"'{key}' ends with the {clean[-1]['role']}'s turn; a preference prompt ends with the "
                          "user turn both answers reply to")
    if not clean[-1]["content"].strip():
        raise RecordError(f"'{key}': the last user message is empty")
    return clean


def _implicit_prompt(chosen: Any, rejected: Any) -> tuple[list[dict[str, str]], Any, Any]:
    """TRL's conversational form with an implicit prompt: `chosen` and `rejected` are whole
    conversations that share every turn but the last assistant one."""
    if not (isinstance(chosen, list) and isinstance(rejected, list) and len(chosen) >= 2 and len(rejected) >= 2):
        raise RecordError("has no 'prompt': give one, or 'chosen' and 'rejected' as whole conversations that share "
                          "every turn but the last (TRL's implicit prompt)")
    if chosen[:-1] != rejected[:-1]:
        raise RecordError("'chosen' and 'rejected' differ before their last turn: with an implicit prompt they "
                          "must share every turn but the last assistant one")
    return chosen[:-1], chosen[-1:], rejected[-1:]


def same_answer(a: str, b: str) -> bool:
    """Two answers that differ only in spacing are one answer (case may be what is preferred)."""
    return " ".join(a.split()) == " ".join(b.split())


def parse_preference(obj: dict, category: str = "", rid: str = "") -> Record:
    """A preference pair in OpenAI's DPO form (`input.messages`, `preferred_output`,
    `non_preferred_output`) or TRL's (`prompt`, `chosen`, `rejected`: all strings, or a list of
    messages and one assistant message each; or an implicit prompt). A conversation's record has
    `messages` (the prompt's turns, ending in a user turn) and `prompt` rendered as `render_chat`
    renders a chat up to its answer; a string prompt is kept as given, with `messages` empty (as a
    completion record is). `completion` is the preferred answer and `rejected` the other, as given."""
    if "preferred_output" in obj or "non_preferred_output" in obj or isinstance(obj.get("input"), dict):
        for key in ("input", "preferred_output", "non_preferred_output"):
            if key not in obj:
                raise RecordError(f"has no '{key}' (OpenAI's preference format needs input, preferred_output "
                                  "and non_preferred_output)")
        inp = obj["input"]
        if not isinstance(inp, dict) or "messages" not in inp:
            raise RecordError("'input' must be an object with 'messages'")
        if inp.get("tools"):
            raise RecordError("'input.tools' is not empty; evo trains text answers only, without tools")
        prompt_msgs: Any = inp["messages"]
        key, chosen, rejected = "input.messages", obj["preferred_output"], obj["non_preferred_output"]
        names = ("preferred_output", "non_preferred_output")
    else:
        for key in ("chosen", "rejected"):
            if key not in obj:
                raise RecordError(f"has no '{key}' (preference records need 'chosen' and 'rejected')")
        chosen, rejected, names = obj["chosen"], obj["rejected"], ("chosen", "rejected")
        if "prompt" in obj:
            prompt_msgs, key = obj["prompt"], "prompt"
        else:
            prompt_msgs, chosen, rejected = _implicit_prompt(chosen, rejected)
            key = "chosen"
    good, bad = _answer(chosen, names[0]), _answer(rejected, names[1])
    if same_answer(good, bad):
        raise RecordError(f"'{names[0]}' and '{names[1]}' are the same answer: a pair that prefers nothing teaches "
                          "nothing")
    if isinstance(prompt_msgs, str):
        if isinstance(chosen, list) or isinstance(rejected, list):
            raise RecordError(f"'{key}' is a string but the answers are messages: use one form for all three "
                              "(strings, or messages)")
        if not prompt_msgs.strip():
            raise RecordError(f"'{key}' is empty")
        return Record("preference", prompt_msgs, good, "", category, rid, bad)
    msgs = _prompt_messages(prompt_msgs, key)
    prompt = render_chat(msgs + [{"role": "assistant", "content": ""}])[0]
    return Record("preference", prompt, good, json.dumps(msgs, ensure_ascii=False), category, rid, bad)


def parse_record(obj: Any) -> Record:
    """Validate one decoded JSON value; raises RecordError with the reason."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    category, rid = _opt_str(obj, "category"), _opt_str(obj, "id")
    if any(k in obj for k in PREFERENCE_KEYS) or isinstance(obj.get("input"), dict):
        return parse_preference(obj, category, rid)
    if "label" in obj and "completion" in obj:
        raise RecordError("has a 'label': an unpaired preference (KTO's form) is not taken; give a pair as "
                          "'prompt', 'chosen' and 'rejected'")
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
    raise RecordError("unknown shape: expected 'prompt' and 'completion', 'messages', 'text', or a preference pair "
                      "('prompt', 'chosen', 'rejected'; or 'input', 'preferred_output', 'non_preferred_output')")
