"""Models held in memory for serving, by sha, loaded on first use and kept most-recently-used.

A promotion changes which sha a name points at; requests already running finish on the model they
started with, because it stays in the pool.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace

from evo.model.generate import Delta, Output, sample_ids, stream_ids, token_logprobs
from evo.model.lineage_model import load_generation
from evo.model.prompts import prompt_ids, reply_prompt
from evo.model.shared import GenerationModel, MixedBatch, SharedBaseError, load_shared
from evo.openai_api import APIError


def _messages(request: dict) -> list[dict]:
    """The chat as the template takes it: role and content (a developer message is a system one)."""
    return [{"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]}
            for m in request["messages"]]


def render_prompt(tok, request: dict) -> str:
    """Chat messages through the model's chat template (evo's plain one when it has none); a
    completion's prompt as given (one prompt: text, or token ids decoded)."""
    if "messages" in request:
        return reply_prompt(_messages(request), tok)
    prompts = request["prompts"] if "prompts" in request else [request["prompt"]]
    if len(prompts) != 1:
        raise APIError(400, f"this takes one prompt, not a list of {len(prompts)}", "prompt")
    return prompts[0] if isinstance(prompts[0], str) else tok.decode(prompts[0])


def request_prompts(tok, request: dict) -> list[tuple[str, list[int]]]:
    """(text, token ids) of each prompt of a request: its chat, rendered; or each completion prompt,
    text tokenized as the tokenizer does (`prompt_ids`), token ids as given."""
    if "messages" in request:
        text = reply_prompt(_messages(request), tok)
        return [(text, prompt_ids(tok, text))]
    prompts = request["prompts"] if "prompts" in request else [request["prompt"]]
    return [(p, prompt_ids(tok, p)) if isinstance(p, str) else (tok.decode(p), list(p)) for p in prompts]


def logprobs_of(model, tok, prompt: list[int], out: Output, top: int, echo: bool) -> dict:
    """The tokens of an answer (and of its prompt too with `echo`), each with its log-probability,
    its `top` likeliest alternatives and its character offset in prompt + answer. A completion's
    (`echo` not None) ends with the end token where the answer did, as OpenAI's legacy logprobs do
    (lm-eval drops the last token of prompt + one generated: it must be the generated one); a chat's
    (`echo` None) names the answer's text tokens only."""
    full = prompt + out.token_ids + ([tok.eos_token_id] if out.eos and echo is not None else [])
    start = 0 if echo else len(prompt)  # None (a chat's): the answer's tokens
    scored = token_logprobs(model, full, start, top)
    pieces = [tok.decode([t], skip_special_tokens=True) for t in full]
    offsets, at = [], 0
    for p in pieces:
        offsets.append(at)
        at += len(p)

    def name(t: int) -> str:
        return tok.decode([t])

    return {"tokens": [name(t) for t in full[start:]],
            "token_logprobs": [lp for lp, _ in scored],
            "top_logprobs": [None if lp is None else [(name(t), v) for t, v in alts] for lp, alts in scored],
            "text_offset": offsets[start:]}


class ModelPool:
    """Generations by sha. Those of one lineage share its base in memory: each is the base plus its
    chain of LoRA adapters applied unmerged (`evo.model.shared`), so a second generation costs its
    adapters, not another base. An adapter that cannot be applied unmerged is served merged."""

    def __init__(self, root: str, max_models: int = 4, dtype: str = "float32", mixed: bool = True):
        self.root, self.max_models, self.dtype = root, max_models, dtype
        self.mixed = mixed  # requests for generations of one base share a batch (False: one batch per model)
        self.models: OrderedDict[str, tuple] = OrderedDict()
        self.bases: dict[str, tuple] = {}  # base sha -> (SharedBase, tokenizer)
        self._lock = threading.Lock()  # batches, streams and warm-ups run on threads of one replica

    def get(self, sha: str):
        with self._lock:
            if sha in self.models:
                self.models.move_to_end(sha)
                return self.models[sha]
            try:
                model = load_shared(self.root, sha, self.bases, self.dtype)
            except SharedBaseError:
                model = load_generation(self.root, sha, self.dtype)
            self.models[sha] = model
            if len(self.models) > self.max_models:
                self.models.popitem(last=False)
                used = {m.shared for m, _ in self.models.values() if isinstance(m, GenerationModel)}
                self.bases = {b: v for b, v in self.bases.items() if v[0] in used}
            return model

    def render(self, sha: str, request: dict) -> str:
        """The text model `sha` is given for a request's "messages" or "prompt" (what makes two
        requests one model input: `evo.ab.tally.prompt_key`)."""
        return render_prompt(self.get(sha)[1], request)

    def check(self, request: dict) -> None:
        """Refuse, before the request joins a batch, token ids model `sha` has no token for: inside
        the batch they would fail every request batched with it."""
        if "prompts" not in request or all(isinstance(p, str) for p in request["prompts"]):
            return
        size = len(self.get(request["sha"])[1])
        for i, p in enumerate(request["prompts"]):
            bad = [t for t in p if isinstance(p, list) and not 0 <= t < size]
            if bad:
                raise APIError(400, f"'prompt' {i} has token id {bad[0]}, outside this model's vocabulary "
                                    f"(0 to {size - 1})", "prompt")

    def stream(self, request: dict) -> tuple[int, Iterator[Delta]]:
        """(prompt tokens, deltas) for one request with n = 1 and one prompt, token by token."""
        model, tok = self.get(request["sha"])
        ((_, ids),) = request_prompts(tok, request)
        return len(ids), stream_ids(model, tok, ids, request["sampling"], request["stops"])

    def run(self, requests: list[dict]) -> list[dict]:
        """Answer a batch of requests; those for generations of one shared base (any of them: each row
        runs its own chain of adapters, `MixedBatch`) and the same settings share a generate call,
        each drawing its answers from generators of its own seed (`sample_ids`), so none moves
        another's.

        A request: {"sha", "sampling": a `Sampling`, "stops": [...], "messages" or "prompts" (text
        or token ids each), and optionally "logprobs": {"top": k, "echo": bool}}. Each prompt is
        tokenized once: its ids are generated from and counted. A result: {"outputs": [{"text",
        "finish_reason", "completion_tokens", "logprobs"}], prompt by prompt, n each; "prompt_tokens"}."""
        groups: dict[tuple, list[tuple[int, int]]] = {}
        prompts: dict[int, list[tuple[str, list[int]]]] = {}
        # each model fetched once and held for the whole batch: an eviction meanwhile cannot reload a
        # base under another id, nor drop one a group still uses
        held = {sha: self.get(sha) for sha in dict.fromkeys(r["sha"] for r in requests)}
        for i, r in enumerate(requests):
            model, tok = held[r["sha"]]
            prompts[i] = request_prompts(tok, r)
            # generations on one shared base batch together (each row its own chain), others by sha
            on = id(model.shared) if isinstance(model, GenerationModel) and self.mixed else r["sha"]
            key = (on, replace(r["sampling"], seed=None), tuple(r["stops"]))
            groups.setdefault(key, []).extend((i, k) for k in range(len(prompts[i])))
        answers: dict[tuple[int, int], list[Output]] = {}
        for (_, sampling, stops), rows in groups.items():
            members = [held[requests[i]["sha"]] for i, _ in rows]
            if isinstance(members[0][0], GenerationModel):  # chains in order: each adapter's rows side by side
                order = sorted(range(len(rows)), key=lambda j: members[j][0].chain)
                rows, members = [rows[j] for j in order], [members[j] for j in order]
            model, tok = members[0]
            if len({m.chain for m, _ in members if isinstance(m, GenerationModel)}) > 1:
                model = MixedBatch(model.shared, [m.chain for m, _ in members])
            ids = [prompts[i][k][1] for i, k in rows]
            seeds = [requests[i]["sampling"].seed for i, _ in rows]
            for row, outs in zip(rows, sample_ids(model, tok, ids, sampling, list(stops), seeds)):
                answers[row] = outs
        results = []
        for i, r in enumerate(requests):
            model, tok = held[r["sha"]]
            want = r.get("logprobs")
            outputs = []
            for k, (text, ids) in enumerate(prompts[i]):
                for o in answers[(i, k)]:
                    echo = bool(want and want.get("echo"))
                    outputs.append({"text": text + o.text if echo else o.text, "finish_reason": o.finish_reason,
                                    "completion_tokens": o.completion_tokens,
                                    "logprobs": logprobs_of(model, tok, ids, o, want["top"],
                                                            None if "messages" in r else echo)
                                    if want and want.get("top") is not None else None})
            results.append({"outputs": outputs, "prompt_tokens": sum(len(ids) for _, ids in prompts[i])})
        return results
