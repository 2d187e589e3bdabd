"""Load any Hugging Face causal LM, and build the tiny Llama base offline."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from evo.config import TinyModelConfig
from evo.model.tokenizer import add_bos, is_legacy_tiny

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_tokenizer(path: str):
    tok = AutoTokenizer.from_pretrained(path)

    if is_legacy_tiny(tok):  # saved before the rule was in the tokenizer: give it the rule it was trained with
        add_bos(tok.backend_tokenizer)
    if tok.pad_token_id is None:  # many causal LMs ship without one; eos is the usual stand-in
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str, dtype: str = "float32"):
    """The same call a user's real model goes through: local folder or hub id, safetensors only."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], use_safetensors=True)
    return model


def build_tiny_llama(cfg: TinyModelConfig, tokenizer, seed: int = 0) -> LlamaForCausalLM:
    """A small Llama-architecture model with ids matched to `tokenizer`'s special tokens."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
