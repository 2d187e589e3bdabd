"""Prompts as the model is given them: a record or a chat rendered through the tokenizer's own chat
template, and its token ids (training, evals and serving all render through here)."""

from __future__ import annotations

import json

from evo.data.records import Record, render_chat


class Rendered(str):
    """Text a chat template wrote: it carries its own special tokens, so none are added to it (as
    `apply_chat_template(..., tokenize=True)` does)."""


def prompt_and_completion(record: Record, tokenizer) -> tuple[str, str]:
    """Use the tokenizer's own chat template for chat records when it has one. A preference record's
    messages are its prompt (they end in the user's turn); its completion is the preferred answer."""
    chat = record.chat()
    if record.kind == "preference":
        if chat is not None and getattr(tokenizer, "chat_template", None):
            return Rendered(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)), \
                record.completion
        return record.prompt, record.completion
    if chat is not None and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
        return Rendered(prompt), chat[-1]["content"]
    return record.prompt, record.completion


def reply_prompt(messages: list[dict[str, str]], tokenizer) -> str:
    """The prompt that asks for the next assistant turn after `messages`, rendered exactly as
    training and evals render a chat up to that turn (serving, the general evals, self-replay)."""
    msgs = messages + [{"role": "assistant", "content": ""}]
    return prompt_and_completion(Record("chat", render_chat(msgs)[0], "", json.dumps(msgs)), tokenizer)[0]


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids as the tokenizer itself encodes it, `tokenizer(prompt)`: its own special
    tokens (a BOS where its rule adds one, none where it does not), none added to a chat-template
    rendering. A rule that closes every text with EOS is cut back: the completion follows."""
    if isinstance(prompt, Rendered):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and ids and ids[-1] == eos and not prompt.endswith(str(tokenizer.eos_token)):
        ids = ids[:-1]
    return ids
