"""Export to GGUF with the `gguf` package: what transformers (and llama.cpp) read back is the model
evo trained. A random tiny Llama stands in here; the real-model test does SmolLM2."""

from __future__ import annotations

import pytest
import torch

from evo.config import TinyModelConfig
from evo.lineage.export import ExportError, adds_bos, permute_rotary, write_gguf
from evo.model.loading import build_tiny_llama
from evo.model.tokenizer import train_bpe_tokenizer

TEXT = "tr red fox runs = zora zova bove"


@pytest.fixture(scope="module")
def tiny():
    tok = train_bpe_tokenizer(["tr red fox runs = zora zova bove", "user: hello there\nassistant: hi."] * 20, 300)
    return build_tiny_llama(TinyModelConfig(num_heads=4), tok, 0).eval(), tok


def load(folder, name):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    return (AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(str(folder), gguf_file=name))


def test_f16_gguf_reads_back_as_the_same_model_and_tokenizer(tiny, tmp_path):
    model, tok = tiny
    path = write_gguf(model, tok, tmp_path / "m.f16.gguf", "f16")
    assert not list(tmp_path.glob("*.part"))  # written under a temporary name, then renamed
    back, btok = load(tmp_path, path.name)
    assert btok(TEXT)["input_ids"] == tok(TEXT)["input_ids"] and adds_bos(btok) and adds_bos(tok)
    assert btok.eos_token_id == tok.eos_token_id and btok.pad_token_id == tok.pad_token_id
    rounded = build_tiny_llama(TinyModelConfig(num_heads=4), tok, 0).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    ids = tok(TEXT, return_tensors="pt")
    with torch.no_grad():  # the f16 copy of every weight, in llama.cpp's layout, reads back exactly
        assert torch.equal(back(**ids).logits, rounded(**ids).logits)
        out = back.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        ref = rounded.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(out, ref)


def test_q8_0_keeps_the_next_token_argmaxes(tiny, tmp_path):
    model, tok = tiny
    path = write_gguf(model, tok, tmp_path / "m.q8_0.gguf", "q8_0")
    assert path.stat().st_size < 0.6 * write_gguf(model, tok, tmp_path / "m.f16.gguf", "f16").stat().st_size
    back, _ = load(tmp_path, path.name)
    ids = tok(" ".join([TEXT] * 4), return_tensors="pt")
    with torch.no_grad():
        agree = (back(**ids).logits.argmax(-1) == model(**ids).logits.argmax(-1)).float().mean().item()
    assert agree >= 0.99


def test_rotary_rows_are_permuted_as_llama_cpp_expects():
    w = torch.arange(8 * 3).reshape(8, 3).numpy()  # 2 heads of 4 rows: [a0 a1 b0 b1] -> [a0 b0 a1 b1]
    assert permute_rotary(w, 2)[:, 0].tolist() == [0, 6, 3, 9, 12, 18, 15, 21]


def test_what_cannot_be_exported_says_why(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(ExportError, match="--outtype 'q4'"):
        write_gguf(model, tok, tmp_path / "x.gguf", "q4")
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok)))
    with pytest.raises(ExportError, match="Llama-architecture models; this one is 'gpt2'"):
        write_gguf(gpt2, tok, tmp_path / "x.gguf")
