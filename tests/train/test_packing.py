"""train.packing: several examples in one row, attention kept within each; the same loss per record,
the same labelled tokens, and the rehearsal rows distilled as in padded batches."""

import pytest
import torch

from evo.config import TinyModelConfig
from evo.data.records import parse_record
from evo.model.loading import build_tiny_llama
from evo.model.tokenizer import train_bpe_tokenizer
from evo.train.examples import IGNORE, collate, encode, pack, token_loss_sum, training_batch

MAX = 48
RECORDS = [
    {"prompt": "tr red cat runs =", "completion": " zora zova bove"},
    {"prompt": "tr cat =", "completion": " zova"},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there."}]},
    {"text": "zora zova bove zora"},
    {"prompt": "tr red red cat cat runs runs =", "completion": " zora zora zova zova bove bove"},
    {"prompt": "tr runs =", "completion": " bove"},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello."}],
     "category": "self-replay"},
    {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello there, zora."}],
     "category": "self-replay"},
]


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(["tr red cat runs = zora zova bove", "user: hi\nassistant: hello there."] * 20, 300)


@pytest.fixture(scope="module")
def examples(tok):
    return [encode(parse_record(r), tok, MAX) for r in RECORDS]


def _model(tok, attn: str):
    torch.manual_seed(0)
    model = build_tiny_llama(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128), tok)
    model.set_attn_implementation(attn)
    return model.eval()


def _per_record(logits: torch.Tensor, batch: dict, rows: list[list[int]]) -> dict[tuple, tuple[float, int]]:
    """{an example's input ids: (summed token loss, labelled tokens)}, rows[i] the example lengths in row i."""
    out = {}
    for i, lengths in enumerate(rows):
        at = 0
        for n in lengths:
            s = slice(at, at + n)
            out[tuple(batch["input_ids"][i, s].tolist())] = token_loss_sum(logits[i : i + 1, s], batch["labels"][i : i + 1, s])
            at += n
    return out


def _layout(batch: dict) -> list[list[int]]:
    """A packed batch's example lengths per row, from its position ids (each example restarts at 0)."""
    rows = []
    for labels, pos in zip(batch["labels"], batch["position_ids"]):
        starts = [t for t in range(len(pos)) if pos[t] == 0]
        ends = starts[1:] + [len(pos)]
        lengths = [e - s for s, e in zip(starts, ends)]
        while lengths and lengths[-1] == 1 and bool((labels[starts[len(lengths) - 1]:] == IGNORE).all()):
            lengths.pop()  # the row's padding: one-token sequences at position 0, nothing labelled
        rows.append(lengths)
    return rows


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_losses_per_record_equal_the_padded_ones(tok, examples, attn):
    model = _model(tok, attn)
    packed, rehearsal = pack(examples, tok.pad_token_id, MAX)
    assert packed["input_ids"].shape[0] < len(examples) and packed["input_ids"].shape[1] <= MAX
    assert packed["input_ids"].numel() < collate(examples, tok.pad_token_id)["input_ids"].numel()  # less computed
    assert "attention_mask" not in packed and packed["use_cache"] is False  # the position ids bound the examples
    layout = _layout(packed)
    assert sorted(n for r in layout for n in r) == sorted(len(e.input_ids) for e in examples)
    with torch.no_grad():
        padded_batch = collate(examples, tok.pad_token_id)
        padded = model(input_ids=padded_batch["input_ids"], attention_mask=padded_batch["attention_mask"]).logits
        want = _per_record(padded, padded_batch, [[len(e.input_ids)] for e in examples])
        got = _per_record(model(**{k: v for k, v in packed.items() if k != "labels"}).logits, packed, layout)
        # the same rows laid end to end without restarting the positions: one causal sequence per row,
        # each example attending to the ones before it, which changes their losses
        naive = model(input_ids=packed["input_ids"]).logits
        # and the position ids with a KV cache: transformers then ignores their bounds
        cached = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=True).logits
        assert float(model(**packed).loss) == pytest.approx(float(model(**padded_batch).loss), abs=1e-4)
    assert got.keys() == want.keys()
    for key, (loss, n) in want.items():
        assert got[key][1] == n > 0
        assert got[key][0] / n == pytest.approx(loss / n, abs=1e-4)
    # the trained tokens of the step: the same count
    assert int((packed["labels"][:, 1:] != IGNORE).sum()) == int((padded_batch["labels"][:, 1:] != IGNORE).sum())
    for wrong in (naive, cached):
        crossed = _per_record(wrong, packed, layout)
        assert max(abs(crossed[k][0] - want[k][0]) / want[k][1] for k in want) > 1e-2


def test_rehearsal_examples_fill_rows_of_their_own_and_are_distilled_as_when_padded(tok, examples):
    from peft import LoraConfig, get_peft_model

    from evo.train.loop import distilled_loss

    packed, rehearsal = pack(examples, tok.pad_token_id, MAX)
    layout = _layout(packed)
    flags = {tuple(e.input_ids): e.rehearsal for e in examples}
    for i, row in enumerate(layout):  # every example of a row shares the row's flag
        at = 0
        for n in row:
            assert flags[tuple(packed["input_ids"][i, at : at + n].tolist())] == bool(rehearsal[i])
            at += n
    assert int(rehearsal.sum()) >= 1 and not bool(rehearsal.all())
    model = get_peft_model(_model(tok, "sdpa"), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                           task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)  # the child differs from its parent: a KL well above 0
    padded, rows = training_batch(examples, tok.pad_token_id, MAX, packing=False)
    want = distilled_loss(model, model, padded, rows, 2.0)
    got = distilled_loss(model, model, packed, rehearsal, 2.0)
    assert float(got) == pytest.approx(float(want), abs=1e-4)
    want.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    got.backward()
    for n, p in model.named_parameters():
        if n in grads:
            assert torch.allclose(p.grad, grads[n], atol=1e-4, rtol=1e-3), n


def test_rows_hold_whole_examples_up_to_max_length(tok, examples):
    packed, _ = pack(examples, tok.pad_token_id, 24)
    assert packed["input_ids"].shape[1] <= 24
    assert sorted(n for r in _layout(packed) for n in r) == sorted(len(e.input_ids) for e in examples)
    with pytest.raises(ValueError, match="longer than max_length 8"):
        pack(examples, tok.pad_token_id, 8)


def test_train_packing_reaches_the_workers(tmp_path):
    """The config switch is what the training loop reads: `train.packing` in the worker config, through
    the dict Ray Train hands the workers."""
    from evo.config import from_dict
    from evo.data.demo import demo_config
    from evo.lineage.root import Lineage
    from evo.train.worker_config import WorkerConfig, worker_config

    raw = {**demo_config(), "data": {**demo_config()["data"], "base": "x"}}
    for packing in (True, False):
        cfg = from_dict({**raw, "train": {**raw.get("train", {}), "packing": packing}})
        w = worker_config(cfg, Lineage(tmp_path / "root"), "gen-1", parent_sha="a" * 64)
        assert w.packing is packing and WorkerConfig.from_loop_config(w.as_loop_config()).packing is packing


def test_lora_on_tied_embeddings_is_refused_before_training():
    """On a base whose input and output embeddings are one tensor, an lm_head adapter merges into both
    (the loaded generation is not the trained one): refused, naming the setting."""
    import pytest

    from evo.config import TinyModelConfig
    from evo.model.loading import build_tiny_llama
    from evo.model.tokenizer import train_bpe_tokenizer
    from evo.train.loop import refuse_tied_targets

    tok = train_bpe_tokenizer(["hello world the cat sat on the mat"] * 20, 300)
    model = build_tiny_llama(TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), tok, 0)
    refuse_tied_targets(model, ["q_proj", "v_proj"])
    for targets in (["q_proj", "lm_head"], ["model.embed_tokens"]):
        with pytest.raises(ValueError, match="train.lora.target_modules"):
            refuse_tied_targets(model, targets)
    model.config.tie_word_embeddings = False
    refuse_tied_targets(model, ["lm_head"])  # untied: its own tensor, merged alone
