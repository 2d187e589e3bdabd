"""Records to token ids with the prompt masked out of the loss, and batches of them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evo.data.records import Record
from evo.model.prompts import Rendered, prompt_and_completion, prompt_ids

IGNORE = -100
REHEARSAL = "self-replay"  # the category of a base's own answers (evo.data.self_replay)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    rehearsal: bool = False  # a base's own answer: distilled from the parent when train.rehearsal_kl > 0


def chat_text(messages: list[dict[str, str]], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """A whole conversation as one text, and the character spans of its assistant turns (what is
    trained). With a chat template: the template's own rendering, each assistant turn's span running
    from the end of the generation prompt before it to its end-of-turn token (a `Rendered` text).
    Without one: `render_chat`'s plain layout ("role: content" lines). The text up to a turn's span is
    exactly the prompt evals and serving give the model for that turn."""
    spans: list[tuple[int, int]] = []
    if getattr(tokenizer, "chat_template", None):
        text = ""
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            head = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            if not head.startswith(text) or not full.startswith(head):
                # a template that rewrites earlier turns (e.g. drops them): only the last turn is trained
                head = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
                full = tokenizer.apply_chat_template(messages, tokenize=False)
                return Rendered(full), [(len(head), len(full.rstrip()))]
            spans.append((len(head), len(full.rstrip())))
            text = full
        return Rendered(text), spans
    text = ""
    for m in messages:
        if m["role"] == "assistant":
            text += "assistant:"
            spans.append((len(text), len(text) + 1 + len(m["content"])))
            text += " " + m["content"] + "\n"
        else:
            text += f"{m['role']}: {m['content']}\n"
    return text[:-1], spans


def encode_chat(messages: list[dict[str, str]], tokenizer, max_length: int) -> Example:
    """Every assistant turn trained, system and user turns (and the template's markup around them)
    masked; the whole conversation tokenized once, as evals and serving tokenize its prompts."""
    text, spans = chat_text(messages, tokenizer)
    templated = isinstance(text, Rendered)
    enc = tokenizer(text, add_special_tokens=not templated, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [IGNORE] * len(ids)
    for j, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and any(s <= a < e for s, e in spans):
            labels[j] = ids[j]
    eos = tokenizer.eos_token_id
    if not templated and ids and ids[-1] == eos:  # a rule that closes texts with eos: keep it, trained
        labels[-1] = eos
    elif not templated:  # the template writes its own end-of-turn token; plain text gets eos
        ids.append(eos)
        labels.append(eos)
    return Example(ids[:max_length], labels[:max_length])


@dataclass
class Pair:
    """A preference record tokenized twice, its prompt followed by the chosen answer and by the rejected
    one; each labels its answer's tokens only (and the end of turn), the prompt masked."""

    chosen: Example
    rejected: Example
    rehearsal: bool = False  # never: a pair learns DPO, not a base's distribution


def answer_example(record: Record, answer: str, tokenizer, max_length: int) -> Example:
    """A preference record's prompt followed by `answer`, tokenized as a chat (its messages and the
    answer as the assistant's turn, `encode_chat`) or, without messages, as a completion; only the
    answer is labelled, so an assistant turn inside the prompt's conversation is not learned."""
    chat = record.chat()
    if chat is not None:
        ex = encode_chat(chat + [{"role": "assistant", "content": answer}], tokenizer, 1 << 30)
    else:
        p = prompt_ids(tokenizer, record.prompt)
        c = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ex = Example(p + c, [IGNORE] * len(p) + c)
    start = len(ex.labels)  # the answer: the last run of labelled tokens
    while start > 0 and ex.labels[start - 1] == IGNORE:
        start -= 1
    while start > 0 and ex.labels[start - 1] != IGNORE:
        start -= 1
    labels = [IGNORE] * start + ex.labels[start:]
    return Example(ex.input_ids[:max_length], labels[:max_length])


def encode_pair(record: Record, tokenizer, max_length: int) -> Pair:
    """A preference record as DPO learns it: the chosen answer (`completion`) and the rejected one."""
    if record.kind != "preference" or not record.rejected:
        raise ValueError(f"record {record.rid or record.sha[:12]} is a {record.kind} record, not a preference pair")
    return Pair(answer_example(record, record.completion, tokenizer, max_length),
                answer_example(record, record.rejected, tokenizer, max_length))


def collate_pairs(items: list, pad_id: int) -> tuple[dict[str, torch.Tensor], int]:
    """One batch of pairs and plain examples (replay), and the number of pairs: its rows are every
    pair's chosen sequence, then every pair's rejected one (TRL's layout), then the examples."""
    pairs = [x for x in items if isinstance(x, Pair)]
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs] + [x for x in items if not isinstance(x, Pair)]
    return collate(rows, pad_id), len(pairs)


def encode(record: Record, tokenizer, max_length: int) -> Example:
    """Loss on completion tokens (and eos) only; prompt tokens are labelled IGNORE. A chat record
    trains every assistant turn (`encode_chat`); a preference record, replayed by a supervised
    generation, its chosen answer."""
    if record.kind == "preference":
        return answer_example(record, record.completion, tokenizer, max_length)
    chat = record.chat()
    if chat is not None:
        ex = encode_chat(chat, tokenizer, max_length)
        ex.rehearsal = record.category == REHEARSAL
        return ex
    prompt, completion = prompt_and_completion(record, tokenizer)
    p = prompt_ids(tokenizer, prompt)
    c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + c)[:max_length]
    labels = ([IGNORE] * len(p) + c)[:max_length]
    return Example(ids, labels, record.category == REHEARSAL)


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors, shapes [batch, longest]."""
    n = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _first_fit(batch: list[Example], cap: int) -> list[list[Example]]:
    """Rows of at most `cap` tokens, filled first-fit, longest example first; rehearsal examples and the
    others in rows of their own."""
    rows: list[list[Example]] = []
    for group in (False, True):
        mine: list[tuple[list[Example], list[int]]] = []
        for e in sorted((e for e in batch if e.rehearsal == group), key=lambda e: -len(e.input_ids)):
            n = len(e.input_ids)
            at = next((r for r in mine if r[1][0] + n <= cap), None)
            if at is None:
                mine.append(at := ([], [0]))
            at[0].append(e)
            at[1][0] += n
        rows += [r for r, _ in mine]
    return rows


def pack(batch: list[Example], pad_id: int, max_length: int) -> tuple[dict, torch.Tensor]:
    """Several examples in one row, no padding between them: (model inputs, which rows are rehearsal).

    Rows are filled first-fit, longest example first (an example is never split; `encode` has cut it
    to max_length), up to a row length chosen per batch: the batch's longest example or a multiple of
    it up to `max_length`, whichever computes the fewest token positions (rows x longest row). On the
    shop mix (examples of 19-89 tokens, max_length 128) that is the longest example, as long as the
    padded batch's rows: 8044 positions over the mix against 8600 with rows of max_length and 11200
    padded (bench/bench_packing.py). Rehearsal examples (`Example.rehearsal`) and the others never
    share a row, so the rehearsal flag stays one per row as `collate`'s batches have it (and the
    parent's forward pass covers the rehearsal rows only). Each
    example's position ids restart at 0 and the inputs carry no attention mask: transformers' Llama
    reads the restarts as the examples' bounds and keeps attention within each (its
    `find_packed_sequence_indices`, with sdpa and eager alike), but only without a KV cache: a forward
    that makes one (use_cache, the default in eval mode and train mode alike) silently attends across
    the whole row, so the inputs say `use_cache=False` (not a tensor). An example's first label is IGNORE: in a
    row it would be the previous example's last token's target. Padding at a row's end has position 0
    at every token (each its own one-token sequence: no fully masked attention row) and label IGNORE.
    The labelled tokens, and so the mean token loss, are the unpacked batch's: only the rows differ."""
    longest = max(len(e.input_ids) for e in batch)
    if longest > max_length:
        raise ValueError(f"pack: an example of {longest} tokens is longer than max_length {max_length}")
    best = None
    for cap in sorted({longest * k for k in range(1, max_length // longest + 1)} | {max_length}):
        rows = _first_fit(batch, cap)
        cost = len(rows) * max(sum(len(x.input_ids) for x in r) for r in rows)
        if best is None or cost < best[0]:
            best = (cost, rows)
    rows = best[1]
    n = max(sum(len(x.input_ids) for x in r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        at = 0
        for e in r:
            k = len(e.input_ids)
            ids[i, at : at + k] = torch.tensor(e.input_ids)
            labels[i, at + 1 : at + k] = torch.tensor(e.labels[1:k], dtype=torch.long)
            pos[i, at : at + k] = torch.arange(k)
            at += k
    rehearsal = torch.tensor([r[0].rehearsal for r in rows])
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "use_cache": False}, rehearsal


def training_batch(batch: list[Example], pad_id: int, max_length: int, packing: bool) -> tuple[dict, torch.Tensor]:
    """A step's model inputs and rehearsal rows: packed (`pack`) or right-padded (`collate`)."""
    if packing:
        return pack(batch, pad_id, max_length)
    return collate(batch, pad_id), torch.tensor([e.rehearsal for e in batch])


def next_token_pairs(attention_mask: torch.Tensor | None = None,
                     position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T-1]: 1 where position t and t+1 are tokens of one example (t has a next token of its own):
    from a padded batch's attention mask, or from a packed batch's position ids (`pack`), where the next
    token continues the example exactly when its position is one more."""
    if attention_mask is not None:
        return attention_mask[:, 1:] * attention_mask[:, :-1]
    if position_ids is None:
        raise ValueError("next_token_pairs: needs an attention mask or (a packed batch) position ids")
    return (position_ids[:, 1:] == position_ids[:, :-1] + 1).long()


def batches(examples: list[Example], batch_size: int, start_step: int, steps: int):
    """Sequential batches over the (curriculum-ordered) examples, wrapping round: step -> batch."""
    n = len(examples)
    for step in range(start_step, steps):
        first = (step * batch_size) % n
        yield step, [examples[(first + j) % n] for j in range(batch_size)]


def count_target_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["attention_mask"].sum())


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Summed next-token loss over labelled positions, and how many: logits [B, T, V], labels [B, T]."""
    targets = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)), targets.reshape(-1),
        ignore_index=IGNORE, reduction="sum")
    return float(loss), int((targets != IGNORE).sum())


def mean_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over labelled positions, a graph-connected 0 when there are none."""
    targets = labels[:, 1:]
    total = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return total / (targets != IGNORE).sum().clamp(min=1)


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, attention_mask: torch.Tensor | None,
                    position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Mean KL(reference ‖ model) of the next-token distributions at every position that has a next
    token of its own example: logits and ref_logits [B, T, V], attention_mask [B, T] (a padded batch)
    or, a packed batch (`pack`), attention_mask None and position_ids [B, T]."""
    ref = torch.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    cur = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    kl = (ref.exp() * (ref - cur)).sum(-1)
    m = next_token_pairs(attention_mask, position_ids).to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1)
