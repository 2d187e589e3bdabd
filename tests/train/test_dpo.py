"""DPO (`train.method: dpo`): pairs tokenized with the answer tokens alone labelled, the loss equal to
TRL's on the same batch, and the reference being the parent (the child's new adapter switched off)."""

from __future__ import annotations

import json

import pytest
import torch

from evo.config import TinyModelConfig
from evo.data.records import Record, render_chat
from evo.model.artifacts import ModelStore
from evo.model.lineage_model import load_generation
from evo.model.loading import build_tiny_llama
from evo.model.tokenizer import train_bpe_tokenizer
from evo.train.dpo import PairStats, dpo_loss, score_pairs, sequence_logps
from evo.train.examples import IGNORE, Pair, collate_pairs, encode, encode_pair
from evo.train.loop import _load
from evo.train.worker_config import LoraSpec, WorkerConfig

TEXTS = ["tr red cat runs = zora zova bove", "user: hi\nassistant: hello there.", "the price is 12 florins"] * 20
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(TEXTS, 300)


def preference(messages: list[dict], chosen: str, rejected: str) -> Record:
    """A preference record as the schema on main has it: messages end in the user's turn."""
    return Record("preference", render_chat(messages + [{"role": "assistant", "content": ""}])[0], chosen,
                  json.dumps(messages), rejected=rejected)


PAIRS = [
    ([{"role": "user", "content": "tr red cat runs ="}], "zora zova bove", "bove zova"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there."},
      {"role": "user", "content": "price?"}], "the price is 12 florins", "hi"),
    ([{"role": "system", "content": "be kind"}, {"role": "user", "content": "cat"}], "zova", "the price is"),
]


def labelled(ex) -> list[int]:
    return [t for t, label in zip(ex.input_ids, ex.labels) if label != IGNORE]


def test_a_pair_labels_its_answer_tokens_only(tok):
    """Both sequences start with the same prompt ids (what evals and serving give the model) and label only
    the answer and its end of turn: never the prompt, nor an assistant turn inside the prompt's conversation."""
    for messages, chosen, rejected in PAIRS:
        pair = encode_pair(preference(messages, chosen, rejected), tok, 96)
        for ex, answer in ((pair.chosen, chosen), (pair.rejected, rejected)):
            learned = labelled(ex)
            assert learned[-1] == tok.eos_token_id and tok.decode(learned[:-1]) == " " + answer
            first = next(i for i, label in enumerate(ex.labels) if label != IGNORE)
            assert all(label != IGNORE for label in ex.labels[first:])  # one run, to the end
        n = next(i for i, label in enumerate(pair.chosen.labels) if label != IGNORE)
        assert pair.chosen.input_ids[:n] == pair.rejected.input_ids[:n]
    # a supervised generation replaying a preference record learns its chosen answer, not nothing
    ex = encode(preference(*PAIRS[1]), tok, 96)
    assert tok.decode(labelled(ex)[:-1]) == " the price is 12 florins"
    with pytest.raises(ValueError, match="not a preference pair"):
        encode_pair(Record("completion", "a", "b"), tok, 96)


def test_collated_rows_are_chosen_then_rejected_then_replay(tok):
    pairs = [encode_pair(preference(*p), tok, 96) for p in PAIRS[:2]]
    replay = encode(Record("completion", "tr red cat runs =", " zora zova bove"), tok, 96)
    batch, n = collate_pairs([pairs[0], replay, pairs[1]], tok.pad_token_id)
    assert n == 2 and batch["input_ids"].shape[0] == 5
    rows = [pairs[0].chosen, pairs[1].chosen, pairs[0].rejected, pairs[1].rejected, replay]
    for i, ex in enumerate(rows):
        assert batch["input_ids"][i, : len(ex.input_ids)].tolist() == ex.input_ids
        assert batch["labels"][i, : len(ex.labels)].tolist() == ex.labels
        assert int(batch["attention_mask"][i].sum()) == len(ex.input_ids)


def _model(tok, seed: int):
    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=128)
    return build_tiny_llama(cfg, tok, seed)


def _perturbed_lora(model, seed: int):
    """A LoRA adapter on `model` whose B matrices are not zero (as after training), so it changes the outputs."""
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS), task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return peft


@pytest.mark.integration  # no Ray, but importing TRL's trainer (datasets, accelerate) costs ~8 s of the quick tier
@pytest.mark.parametrize("sft_weight", [0.0, 0.5])
def test_the_loss_is_trls_on_the_same_batch(tok, sft_weight, tmp_path):
    """evo's DPO loss (and its SFT term) equals TRL 1.16's DPOTrainer loss on the same pairs, to 1e-5, with
    TRL's own collator building its batch from the prompt and answer ids; the reward accuracy and margin too."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    beta = 0.3
    peft = _perturbed_lora(_model(tok, 1), 2)
    peft.eval()
    pairs = [encode_pair(preference(*p), tok, 96) for p in PAIRS]
    batch, n = collate_pairs(pairs, tok.pad_token_id)
    loss, stats = dpo_loss(peft, peft, batch, n, beta, sft_weight)

    def split(p: Pair) -> dict:
        k = next(i for i, label in enumerate(p.chosen.labels) if label != IGNORE)
        return {"prompt_ids": p.chosen.input_ids[:k], "chosen_ids": p.chosen.input_ids[k:],
                "rejected_ids": p.rejected.input_ids[k:]}

    trl_batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([split(p) for p in pairs])
    types, weights = (["sigmoid", "sft"], [1.0, sft_weight]) if sft_weight else (["sigmoid"], [1.0])
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=types, loss_weights=weights, report_to=[],
                     use_cpu=True, bf16=False, per_device_train_batch_size=len(pairs), max_length=None)
    data = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    # the reference given as the same weights without the adapter (what evo's switched-off adapter is; a
    # PeftModel alone would make TRL copy its trained adapter as the reference, the initial policy)
    trainer = DPOTrainer(model=peft, ref_model=_model(tok, 1).eval(), args=args, train_dataset=data,
                         processing_class=tok)
    trainer.model.eval()
    theirs = trainer._compute_loss(trainer.model, trl_batch, False)
    assert float(loss.detach()) == pytest.approx(float(theirs.detach()), abs=1e-5)
    logged = trainer._metrics["eval"]
    assert stats.correct / stats.pairs == pytest.approx(logged["rewards/accuracies"][-1], abs=1e-6)
    assert stats.margin / stats.pairs == pytest.approx(logged["rewards/margins"][-1], abs=1e-5)
    chosen = sequence_logps(peft(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                            batch["labels"])[:n]
    assert float(chosen.mean()) == pytest.approx(logged["logps/chosen"][-1], abs=1e-4)


def test_the_reference_is_the_parent(tok, tmp_path):
    """The worker's model (`train.loop._load`: the parent, i.e. base plus its ancestors' adapters, and a fresh
    adapter) with its new adapter switched off gives the parent's log-probabilities, to 1e-5, though the new
    adapter has moved (its outputs differ) and the parent's own adapter matters (the base's differ too)."""
    store = ModelStore(tmp_path)
    base = _model(tok, 3)

    def save(folder):
        base.save_pretrained(str(folder))
        tok.save_pretrained(str(folder))

    base_sha = store.put_base(save, {"gen_id": "gen-0"})
    ancestor = _perturbed_lora(_model(tok, 3), 4)
    ancestor.save_pretrained(str(tmp_path / "adapter"))
    parent_sha = store.put_adapter(tmp_path / "adapter", base_sha, {"gen_id": "gen-1"})

    cfg = WorkerConfig(root=str(tmp_path), mix_path="", val_path="", steps=1, batch_size=1, lr=1e-3, warmup_steps=0,
                       checkpoint_every=1, seed=0, max_length=96, dtype="float32", parent_sha=parent_sha,
                       lora=LoraSpec(4, 8, 0.0, TARGETS), method="dpo")
    child, _ = _load(cfg, None)
    with torch.no_grad():
        for name, p in child.named_parameters():
            if "lora_B" in name:
                p.add_(0.3)
    child.eval()
    batch, n = collate_pairs([encode_pair(preference(*p), tok, 96) for p in PAIRS], tok.pad_token_id)
    ids, mask = batch["input_ids"], batch["attention_mask"]

    def logps(model):
        with torch.no_grad():
            return sequence_logps(model(input_ids=ids, attention_mask=mask).logits, batch["labels"])

    parent, _ = load_generation(tmp_path, parent_sha)
    with child.disable_adapter():
        off = logps(child)
    assert torch.allclose(off, logps(parent.eval()), atol=1e-5, rtol=0)
    assert not torch.allclose(logps(child), off, atol=1e-2)  # the new adapter does change them
    assert not torch.allclose(logps(_model(tok, 3).eval()), off, atol=1e-2)  # and the parent is not the base
    # what the ledger reports: the child's own ranking, against that same parent
    s = score_pairs(child, [encode_pair(preference(*p), tok, 96) for p in PAIRS], tok.pad_token_id, 0.1)
    ratio = logps(child) - off
    assert s.pairs == 3 and s.chosen_logratio == pytest.approx(float(ratio[:n].sum()), abs=1e-4)
    assert s.correct == int((ratio[:n] > ratio[n:]).sum())
    assert isinstance(s, PairStats)
