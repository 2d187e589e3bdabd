"""Generations served on one shared base (LoRA applied unmerged, per thread) give the merged model's
outputs, and cost their adapters, not another base."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from evo.config import TinyModelConfig
from evo.model.loading import build_tiny_llama
from evo.model.shared import GenerationModel, SharedBase, SharedBaseError, read_adapter
from evo.model.tokenizer import train_bpe_tokenizer


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A tiny base, two LoRA adapters trained-in-name-only (random B) each on its merged parent."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("chain")
    tok = train_bpe_tokenizer(["tr red fox runs = zora zova bove", "user: hello there\nassistant: hi."] * 20, 300)
    base = build_tiny_llama(TinyModelConfig(num_heads=4), tok, 0).eval()
    merged, current = [base], build_tiny_llama(TinyModelConfig(num_heads=4), tok, 0)
    torch.manual_seed(1)
    for i in range(2):
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
        peft = get_peft_model(copy.deepcopy(current), lora)
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
        peft.save_pretrained(str(folder / f"a{i}"))
        current = peft.merge_and_unload().eval()
        merged.append(current)
    return base, tok, merged, folder


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def shared_with_both(chain) -> tuple[SharedBase, torch.Tensor]:
    """A fresh copy of the base with both adapters added, and a prompt's ids."""
    _, tok, _, folder = chain
    shared = SharedBase(build_tiny_llama(TinyModelConfig(num_heads=4), tok, 0))
    shared.add("a0", folder / "a0")
    shared.add("a1", folder / "a1")
    return shared, torch.tensor([tok("tr red fox runs =")["input_ids"]])


def test_a_chain_on_the_shared_base_is_the_merged_model(chain):
    _, tok, merged, _ = chain
    shared, ids = shared_with_both(chain)
    for links, want in (((), merged[0]), (("a0",), merged[1]), (("a0", "a1"), merged[2])):
        got = logits(GenerationModel(shared, links), ids)
        assert torch.allclose(got, logits(want, ids), atol=1e-5), links
    assert not torch.allclose(logits(merged[0], ids), logits(merged[2], ids), atol=1e-3)  # the adapters matter
    out = GenerationModel(shared, ("a0", "a1")).generate(input_ids=ids, max_new_tokens=6, do_sample=False,
                                                         pad_token_id=tok.pad_token_id)
    assert out.tolist() == merged[2].generate(input_ids=ids, max_new_tokens=6, do_sample=False,
                                              pad_token_id=tok.pad_token_id).tolist()


def test_threads_use_their_own_generation_at_once(chain):
    merged = chain[2]
    shared, ids = shared_with_both(chain)
    want = {(): logits(merged[0], ids), ("a0", "a1"): logits(merged[2], ids)}
    wrong = []

    def work(links):
        m = GenerationModel(shared, links)
        for _ in range(30):
            if not torch.allclose(logits(m, ids), want[links], atol=1e-5):
                wrong.append(links)

    threads = [threading.Thread(target=work, args=(links,)) for links in want for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_an_adapter_it_cannot_apply_unmerged_is_refused(chain, tmp_path):
    import json
    import shutil

    _, _, _, folder = chain
    shutil.copytree(folder / "a0", tmp_path / "dora")
    cfg = json.loads((tmp_path / "dora" / "adapter_config.json").read_text())
    (tmp_path / "dora" / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(SharedBaseError, match="only plain LoRA adapters"):
        read_adapter(tmp_path / "dora")


MIXED_PROMPTS = ["tr red fox runs =", "user: hello there", "tr red =", "tr fox runs = zora", "hello"]


def test_a_mixed_batch_answers_each_prompt_as_its_generation_alone(chain):
    """Three generations (the base, one adapter, two) in one generate call: each prompt's greedy
    answer and sampled answers (seeded) are those of its generation asked alone, and its logits
    those of the merged model."""
    from evo.model.generate import Sampling, sample_ids
    from evo.model.prompts import prompt_ids
    from evo.model.shared import MixedBatch

    _, tok, merged, _ = chain
    shared, _ = shared_with_both(chain)
    links = [(), ("a0",), ("a0", "a1"), ("a0",), ("a0", "a1")]
    ids = [prompt_ids(tok, p) for p in MIXED_PROMPTS]
    calls = []
    real = shared.model.generate
    shared.model.generate = lambda *a, **kw: calls.append(kw["input_ids"].shape[0]) or real(*a, **kw)
    for sampling in (Sampling(max_tokens=8, temperature=0), Sampling(max_tokens=8, temperature=1.0, n=2)):
        calls.clear()
        together = sample_ids(MixedBatch(shared, links), tok, ids, sampling, [], list(range(5)))
        assert calls == [5 * (sampling.n if sampling.temperature else 1)]  # one call for all of them
        for i, chain_i in enumerate(links):
            alone = sample_ids(GenerationModel(shared, chain_i), tok, [ids[i]], sampling, [], [i])[0]
            assert [o.text for o in together[i]] == [o.text for o in alone], (i, chain_i)
    assert len({o.text for outs in together for o in outs}) > 1  # the generations answer differently
    width = max(map(len, ids))
    padded = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(x) for x in ids])[:, None]).long()
    with torch.no_grad():
        got = MixedBatch(shared, links)(input_ids=padded, attention_mask=mask).logits
        for i, chain_i in enumerate(links):
            want = merged[len(chain_i)](input_ids=padded[i:i + 1], attention_mask=mask[i:i + 1]).logits[0]
            assert torch.allclose(got[i][mask[i].bool()], want[mask[i].bool()], atol=1e-5), chain_i


def test_the_pool_batches_requests_for_different_generations_of_a_base_together(chain, tmp_path):
    """What a replica does with a @serve.batch of requests for the champion, the candidate and a
    tenant's model: one generate call, each answered as its model alone answers (and `mixed=False`,
    the old way, one call per model)."""
    from evo.inference.pool import ModelPool
    from evo.model.artifacts import ModelStore
    from evo.model.generate import Sampling

    base, tok, _, folder = chain
    store = ModelStore(tmp_path)
    shas = [store.put_base(lambda d: (base.save_pretrained(d), tok.save_pretrained(d)), {})]
    for i in range(2):
        shas.append(store.put_adapter(folder / f"a{i}", shas[-1], {}))
    requests = [{"sha": shas[i % 3], "sampling": Sampling(max_tokens=6, temperature=0), "stops": [], "prompts": [p]}
                for i, p in enumerate(MIXED_PROMPTS)]
    answers = {}
    for mixed in (True, False):
        pool = ModelPool(str(tmp_path), max_models=3, mixed=mixed)
        for sha in shas:
            pool.get(sha)
        shared = next(iter(pool.bases.values()))[0]
        calls = []
        real = shared.model.generate
        shared.model.generate = lambda *a, real=real, calls=calls, **kw: calls.append(kw["input_ids"].shape[0]) or real(*a, **kw)
        answers[mixed] = [r["outputs"][0]["text"] for r in pool.run(requests)]
        assert calls == ([5] if mixed else [2, 2, 1])
        alone = [pool.run([r])[0]["outputs"][0]["text"] for r in requests]
        assert answers[mixed] == alone
    assert answers[True] == answers[False]


def test_a_layer_whose_rows_are_not_the_batchs_is_refused_in_a_mixed_batch(chain):
    """A layer fed its tokens flattened (as a mixture of experts feeds its experts) would add one row's
    adapter to another row's tokens: refused, not answered."""
    shared, _ = shared_with_both(chain)
    name = next(iter(shared.adapters["a0"]))
    layer = shared._modules[name]
    with shared.using_rows([("a0",), ()]):
        layer(torch.randn(2, 3, layer.in_features))  # rows first: fine
        with pytest.raises(SharedBaseError, match="not the batch's"):
            layer(torch.randn(6, layer.in_features))
