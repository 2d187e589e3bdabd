"""A deep generation loads from a merged model cached by sha, and answers exactly as its chain of adapters does."""

from __future__ import annotations

import copy

import pytest
import torch

from evo.config import TinyModelConfig
from evo.model import lineage_model
from evo.model.artifacts import ModelStore
from evo.model.generate import greedy
from evo.model.lineage_model import load_generation, merged_dir
from evo.model.loading import build_tiny_llama
from evo.model.tokenizer import train_bpe_tokenizer

PROMPTS = ["tr red fox runs =", "tr big owl eats =", "user: hello there", "tr old bee sees =", "tr hot cow hides ="]
DEPTH = 6


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """A root with a tiny base and a chain of DEPTH adapters (random B), each on its merged parent, and
    each generation's model merged by hand (the reference)."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("root")
    tok = train_bpe_tokenizer(["tr red fox runs = zora zova bove", "user: hello there\nassistant: hi."] * 20, 300)
    base = build_tiny_llama(TinyModelConfig(num_heads=4), tok, 0).eval()
    store = ModelStore(root)

    def save(folder):
        base.save_pretrained(str(folder))
        tok.save_pretrained(str(folder))

    shas = [store.put_base(save, {"gen_id": "gen-0"})]
    current, reference = copy.deepcopy(base), {}
    torch.manual_seed(1)
    for i in range(DEPTH):
        peft = get_peft_model(copy.deepcopy(current),
                              LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
        folder = tmp_path_factory.mktemp(f"a{i}")
        peft.save_pretrained(str(folder))
        shas.append(store.put_adapter(folder, shas[-1], {"gen_id": f"gen-{i + 1}"}))
        current = peft.merge_and_unload().eval()
        reference[shas[-1]] = copy.deepcopy(current)
    return root, shas, reference, tok


@pytest.fixture
def merges(monkeypatch):
    """How many adapters a load merges (PeftModel.from_pretrained, called for real)."""
    calls = []
    real = lineage_model.PeftModel.from_pretrained

    def counted(*a, **kw):
        calls.append(a[1])
        return real(*a, **kw)

    monkeypatch.setattr(lineage_model.PeftModel, "from_pretrained", counted)
    return calls


def same_model(got, want, tok) -> None:
    g, w = got.state_dict(), want.state_dict()
    assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in g)
    assert greedy(got, tok, PROMPTS, 8, 8) == greedy(want, tok, PROMPTS, 8, 8)


def test_a_deep_generation_is_cached_merged_and_answers_as_its_chain(lineage, merges):
    root, shas, reference, tok = lineage
    deep = shas[-2]  # DEPTH - 1 adapters
    model, _ = load_generation(root, deep)
    assert len(merges) == DEPTH - 1
    same_model(model, reference[deep], tok)
    assert (merged_dir(root, deep, "float32") / "merged.json").exists()

    merges.clear()
    again, _ = load_generation(root, deep)  # from the cache: nothing merged
    assert merges == []
    same_model(again, reference[deep], tok)

    child, _ = load_generation(root, shas[-1])  # its child: the cached parent and one adapter
    assert len(merges) == 1
    same_model(child, reference[shas[-1]], tok)
    assert not merged_dir(root, shas[-1], "float32").exists()  # one link after the cache: not worth a copy


def test_a_changed_cached_model_is_refused_and_the_chain_loads(lineage, merges):
    from safetensors.torch import load_file, save_file

    root, shas, reference, tok = lineage
    sha = shas[3]
    load_generation(root, sha)
    folder = merged_dir(root, sha, "float32")
    weights = next(folder.glob("*.safetensors"))
    tensors = load_file(str(weights))
    key = next(k for k in tensors if "q_proj" in k)
    tensors[key] = tensors[key] + 1.0
    save_file(tensors, str(weights), metadata={"format": "pt"})
    merges.clear()
    model, _ = load_generation(root, sha)
    assert len(merges) == 3  # the damaged copy dropped, the chain merged again (and cached afresh)
    same_model(model, reference[sha], tok)


def test_only_the_newest_cached_models_are_kept(lineage, monkeypatch):
    root, shas, _, _ = lineage
    monkeypatch.setattr(lineage_model, "STALE_S", 0)  # none in use by another process
    monkeypatch.setattr(lineage_model, "MERGE_AFTER", 1)  # every load is cached
    for sha in shas[1:]:
        load_generation(root, sha)
    kept = {p.name for p in merged_dir(root, shas[1], "float32").parent.iterdir()}
    assert kept == {f"{sha}-float32" for sha in shas[-lineage_model.KEEP:]}


def test_an_unverified_load_caches_nothing(lineage, tmp_path):
    """A load with verify=False (a caller that has checked, or does not care) must not leave weights a
    later verified load would start from."""
    import shutil

    root, shas, _, _ = lineage
    copy_root = tmp_path / "root"
    shutil.copytree(root / "models", copy_root / "models")
    load_generation(copy_root, shas[-1], verify=False)
    assert not (copy_root / ".merged").exists() or not any((copy_root / ".merged").iterdir())
    load_generation(copy_root, shas[-1])
    assert (merged_dir(copy_root, shas[-1], "float32") / "merged.json").exists()


def test_the_trainers_child_is_the_same_whether_its_parent_was_cached(lineage, merges, tmp_path):
    """The trainer loads its parent like every other reader (a cache hit merges nothing), and the new
    adapter it puts on that parent has the same initial weights either way: merging draws random
    numbers (PEFT initializes each LoRA layer before loading it) and a cache hit draws none, so the
    adapter is initialized from its own seed (the child trained on it would otherwise depend on the
    cache; the demo's gen-3 did)."""
    import shutil

    from evo.train.loop import _load
    from evo.train.worker_config import LoraSpec, WorkerConfig

    root, shas, reference, tok = lineage
    copy_root = tmp_path / "root"
    shutil.copytree(root / "models", copy_root / "models")
    cfg = WorkerConfig(root=str(copy_root), mix_path="mix.parquet", val_path="val.parquet", steps=1, batch_size=1,
                       lr=1e-3, warmup_steps=0, checkpoint_every=1, seed=5, max_length=32, dtype="float32",
                       parent_sha=shas[-2], lora=LoraSpec(4, 8, 0.0, ("q_proj", "v_proj")))
    adapters = []
    for _ in range(2):  # the first load merges the chain (and caches it), the second is a hit
        merges.clear()
        torch.manual_seed(123)
        model, _ = _load(cfg, None)
        adapters.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n})
        loaded = len(merges)
    assert loaded == 0 and (merged_dir(copy_root, shas[-2], "float32") / "merged.json").exists()
    first, second = adapters
    assert first.keys() == second.keys() and first and all(torch.equal(first[k], second[k]) for k in first)
    same_model(model.merge_and_unload(), reference[shas[-2]], tok)  # lora_B starts at zero: the parent itself
