"""One base in memory for every generation of a lineage: each generation is its chain of LoRA
adapters, applied unmerged, chosen per thread.

A generation's weights are the base's plus the sum of its chain's low-rank deltas (each adapter was
trained on its merged parent, so merging them in order is the same sum). Serving two generations
therefore needs one base and two small sets of (A, B) matrices, not two merged copies of the model:
a forward hook on each adapted linear layer adds `scale * B(A(x))` for the adapters of the chain the
calling thread has selected. Threads are independent, so a stream of one generation and a batch of
another can run on the same base at once. And one batch can hold several generations
(`MixedBatch`): each adapter's delta is added to the rows whose chain has it, so the champion, the
candidate and the tenants' models of one base are answered by one forward per step, not one each.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from evo.model.artifacts import ModelStore
from evo.model.loading import load_causal_lm, load_tokenizer


class SharedBaseError(ValueError):
    pass


def read_adapter(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """A PEFT LoRA adapter folder as {module name: (A, B, scale)}."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("use_dora") or cfg.get("fan_in_fan_out"):
        raise SharedBaseError(f"{folder}: only plain LoRA adapters can be served unmerged")
    r = cfg["r"]
    scale = cfg["lora_alpha"] / (r ** 0.5 if cfg.get("use_rslora") else r)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    out: dict[str, list] = {}
    for key, w in weights.items():
        name, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            raise SharedBaseError(f"{folder}: unexpected adapter tensor {key}")
        out.setdefault(name, [None, None])[part[0] == "B"] = w.float()
    return {name: (a, b, scale) for name, (a, b) in out.items()}


class SharedBase:
    """A base model with hooks that add the selected chain's LoRA deltas."""

    def __init__(self, model):
        self.model = model.eval()
        self.adapters: dict[str, dict[str, tuple]] = {}  # adapter sha -> module name -> (A, B, scale)
        self._local = threading.local()
        self._hooked: set[str] = set()
        self._modules = dict(model.named_modules())

    def add(self, sha: str, folder: Path) -> None:
        if sha in self.adapters:
            return
        deltas = read_adapter(folder)
        device = next(self.model.parameters()).device
        for name in deltas:
            if name not in self._modules or not isinstance(self._modules[name], torch.nn.Linear):
                raise SharedBaseError(f"{folder}: adapter for {name}, which is not a linear layer of the base")
            if name not in self._hooked:
                self._modules[name].register_forward_hook(self._hook(name))
                self._hooked.add(name)
        self.adapters[sha] = {n: (a.to(device), b.to(device), s) for n, (a, b, s) in deltas.items()}

    def _hook(self, name: str):
        def add_deltas(module, inputs, output):
            groups = getattr(self._local, "groups", None)
            if groups is not None:  # a mixed batch: each adapter's delta on the rows whose chain has it
                if inputs[0].shape[0] != self._local.rows:  # rows must be the input's first dimension
                    raise SharedBaseError(f"{name}: an input of {inputs[0].shape[0]} rows in a mixed batch of "
                                          f"{self._local.rows}: this layer's rows are not the batch's, so a mixed "
                                          "batch cannot tell whose adapter each row takes")
                for sha, rows in groups:
                    d = self.adapters[sha].get(name)
                    if d is None:
                        continue
                    a, b, scale = d
                    if isinstance(rows, slice):  # its rows side by side (the pool sorts them so): views, no copies
                        x = inputs[0][rows].to(a.dtype)
                        delta = scale * torch.nn.functional.linear(torch.nn.functional.linear(x, a), b)
                        output = output.clone() if output.requires_grad else output
                        output[rows] += delta.to(output.dtype)
                    else:
                        x = inputs[0].index_select(0, rows.to(inputs[0].device)).to(a.dtype)
                        delta = scale * torch.nn.functional.linear(torch.nn.functional.linear(x, a), b)
                        output = output.index_add(0, rows.to(output.device), delta.to(output.dtype))
                return output
            for sha in getattr(self._local, "chain", ()):
                d = self.adapters[sha].get(name)
                if d is not None:
                    a, b, scale = d
                    x = inputs[0].to(a.dtype)
                    output = output + (scale * torch.nn.functional.linear(torch.nn.functional.linear(x, a), b)).to(output.dtype)
            return output

        return add_deltas

    @contextmanager
    def using(self, chain: tuple[str, ...]):
        """Select the adapters of `chain` for this thread's forward passes."""
        before = getattr(self._local, "chain", ())
        self._local.chain = chain
        try:
            yield
        finally:
            self._local.chain = before

    @contextmanager
    def using_rows(self, chains: list[tuple[str, ...]]):
        """Select, for this thread's forward passes, a chain per batch row (`chains[i]` for row i).
        Each adapter's delta is computed on its rows only and added in chain order (an adapter's place
        on its chain is the same on every chain that has it: chains are paths from one base), so a
        row gets exactly the additions its chain alone would give it."""
        place: dict[str, int] = {}
        for chain in chains:
            for depth, sha in enumerate(chain):
                place.setdefault(sha, depth)
        groups = []
        for sha in sorted(place, key=lambda s: (place[s], s)):
            rows = [i for i, c in enumerate(chains) if sha in c]
            contiguous = rows[-1] - rows[0] + 1 == len(rows)
            groups.append((sha, slice(rows[0], rows[-1] + 1) if contiguous else torch.tensor(rows, dtype=torch.long)))
        before = getattr(self._local, "groups", None), getattr(self._local, "rows", None)
        self._local.groups, self._local.rows = groups, len(chains)
        try:
            yield
        finally:
            self._local.groups, self._local.rows = before


class _OnSharedBase:
    """What generation and the evals call (`generate`, a forward pass, `device`, `config`) on a shared
    base, with the adapters `_selecting` chooses for the call's rows on the calling thread."""

    shared: SharedBase

    @property
    def device(self):
        return self.shared.model.device

    @property
    def config(self):
        return self.shared.model.config

    def eval(self):
        return self

    def _selecting(self, kwargs: dict):
        raise NotImplementedError

    def generate(self, *args, **kwargs):
        with self._selecting(kwargs):
            return self.shared.model.generate(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        with self._selecting(kwargs):
            return self.shared.model(*args, **kwargs)


class GenerationModel(_OnSharedBase):
    """One generation on a shared base: its chain selected for every row."""

    def __init__(self, shared: SharedBase, chain: tuple[str, ...]):
        self.shared, self.chain = shared, chain

    def _selecting(self, kwargs: dict):
        return self.shared.using(self.chain)


class MixedBatch(_OnSharedBase):
    """Several generations of one shared base in one batch: prompt i is answered by `chains[i]`
    (a batch of b rows for p prompts gives each prompt b / p consecutive rows, as `sample_ids` makes
    its n copies). One forward per step for all of them, not one per generation. Called with
    `input_ids=` (the batch's rows)."""

    def __init__(self, shared: SharedBase, chains: list[tuple[str, ...]]):
        self.shared, self.chains = shared, list(chains)

    def _selecting(self, kwargs: dict):
        batch = kwargs["input_ids"].shape[0]
        if batch % len(self.chains):
            raise SharedBaseError(f"a batch of {batch} rows for {len(self.chains)} prompts: not a whole number each")
        return self.shared.using_rows([c for c in self.chains for _ in range(batch // len(self.chains))])


def load_shared(root: str | Path, sha: str, bases: dict, dtype: str = "float32", verify: bool = True):
    """(GenerationModel, tokenizer) for `sha`, its base taken from (or put into) `bases`
    ({base sha: (SharedBase, tokenizer)}) and its adapters added to that base."""
    store = ModelStore(root)
    links = store.chain(sha)
    for link in links if verify else ():
        store.verify(link)
    if links[0] not in bases:
        folder = str(store.weights_dir(links[0]))
        bases[links[0]] = (SharedBase(load_causal_lm(folder, dtype)), load_tokenizer(folder))
    shared, tok = bases[links[0]]
    for link in links[1:]:
        shared.add(link, store.path(link))
    return GenerationModel(shared, tuple(links[1:])), tok
