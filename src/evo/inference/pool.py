"""Models held in memory for serving, by sha, loaded on first use and kept most-recently-used.

A promotion changes which sha a name points at; requests already running finish on the model they
started with, because it stays in the pool.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from itertools import groupby

from evo.model.generate import Delta, Sampling, count_prompt_tokens, generate_batch, stream_one
from evo.model.lineage_model import load_generation
from evo.model.prompts import reply_prompt
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

    def stream(self, request: dict) -> tuple[int, Iterator[Delta]]:
        """(prompt tokens, deltas) for one request with n = 1, token by token."""
        model, tok = self.get(request["sha"])
        prompt = render_prompt(tok, request)
        return count_prompt_tokens(tok, prompt), stream_one(model, tok, prompt, Sampling(**request["sampling"]),
                                                            request["stops"])

    def run(self, requests: list[dict]) -> list[dict]:
        """Answer a batch of requests; those for the same model and settings share a generate call."""
        results: dict[int, dict] = {}

        def key(i: int):
            r = requests[i]
            return r["sha"], json.dumps(r["sampling"], sort_keys=True), tuple(r["stops"])

        for (sha, sampling, stops), group in groupby(sorted(range(len(requests)), key=key), key=key):
            idx = list(group)
            model, tok = self.get(sha)
            prompts = [render_prompt(tok, requests[i]) for i in idx]
            outs = generate_batch(model, tok, prompts, Sampling(**json.loads(sampling)), list(stops))
            for i, p, o in zip(idx, prompts, outs):
                results[i] = {"outputs": [(x.text, x.finish_reason, x.completion_tokens) for x in o],
                              "prompt_tokens": count_prompt_tokens(tok, p)}
        return [results[i] for i in range(len(requests))]
