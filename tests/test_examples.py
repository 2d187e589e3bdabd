"""Tokenized examples: loss on completion (assistant) tokens only; the chat template when there is one."""

import pytest

from evo.data.records import parse_record
from evo.model.tokenizer import train_bpe_tokenizer
from evo.train.examples import IGNORE, batches, collate, encode, prompt_and_completion


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(["tr red cat runs = zora zova bove", "user: hi\nassistant: hello there."] * 20, 300)


def test_prompt_tokens_are_masked(tok):
    rec = parse_record({"prompt": "tr red cat runs =", "completion": " zora zova bove"})
    ex = encode(rec, tok, 64)
    n_prompt = len(tok("tr red cat runs =", add_special_tokens=False)["input_ids"]) + 1  # + bos
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == tok.eos_token_id and ex.input_ids[0] == tok.bos_token_id
    assert tok.decode(ex.input_ids[n_prompt:-1]) == " zora zova bove"


def test_chat_trains_on_the_last_assistant_turn_only(tok):
    rec = parse_record({"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "hello there."}]})
    ex = encode(rec, tok, 64)
    learned = [t for t, label in zip(ex.input_ids, ex.labels) if label != IGNORE]
    assert tok.decode(learned[:-1]) == " hello there."


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
