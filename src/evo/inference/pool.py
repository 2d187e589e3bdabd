"""Models held in memory for serving, by sha, loaded on first use and kept most-recently-used.

A promotion changes which sha a name points at; requests already running finish on the model they
started with, because it stays in the pool.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

from evo.model.generate import Delta, generate_ids, stream_ids
from evo.model.lineage_model import load_generation
from evo.model.prompts import prompt_ids, reply_prompt
from evo.model.shared import GenerationModel, SharedBaseError, load_shared


def render_prompt(tok, request: dict) -> str:
    """Chat messages through the model's chat template (evo's plain one when it has none)."""
    if "messages" not in request:
        return request["prompt"]
    return reply_prompt(request["messages"], tok)


class ModelPool:
    """Generations by sha. Those of one lineage share its base in memory: each is the base plus its
    chain of LoRA adapters applied unmerged (`evo.model.shared`), so a second generation costs its
    adapters, not another base. An adapter that cannot be applied unmerged is served merged."""

    def __init__(self, root: str, max_models: int = 4, dtype: str = "float32"):
        self.root, self.max_models, self.dtype = root, max_models, dtype
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

    def stream(self, request: dict) -> tuple[int, Iterator[Delta]]:
        """(prompt tokens, deltas) for one request with n = 1, token by token."""
        model, tok = self.get(request["sha"])
        ids = prompt_ids(tok, render_prompt(tok, request))
        return len(ids), stream_ids(model, tok, ids, request["sampling"], request["stops"])

    def run(self, requests: list[dict]) -> list[dict]:
        """Answer a batch of requests; those for the same model and settings share a generate call.

        A request: {"sha", "sampling": a `Sampling`, "stops": [...], and "messages" or "prompt"}.
        Each prompt is tokenized once: its ids are generated from and counted."""
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r["sha"], r["sampling"], tuple(r["stops"])), []).append(i)
        results: dict[int, dict] = {}
        for (sha, sampling, stops), idx in groups.items():
            model, tok = self.get(sha)
            ids = [prompt_ids(tok, render_prompt(tok, requests[i])) for i in idx]
            outs = generate_ids(model, tok, ids, sampling, list(stops))
            for i, x, o in zip(idx, ids, outs):
                results[i] = {"outputs": [(y.text, y.finish_reason, y.completion_tokens) for y in o],
                              "prompt_tokens": len(x)}
        return [results[i] for i in range(len(requests))]
