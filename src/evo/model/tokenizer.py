"""Train a byte-level BPE tokenizer locally, wrapped as a Hugging Face fast tokenizer."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `texts`; every byte is in the alphabet, so any input encodes."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    add_bos(tok)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)
    fast.padding_side = "right"
    return fast


def add_bos(tok: Tokenizer) -> None:
    """The tokenizer's own rule starts every text with <s>, so `tokenizer(text)` in plain transformers
    gives the ids evo trains and serves with (nothing is prepended by hand)."""
    bos = SPECIALS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])


def is_legacy_tiny(fast) -> bool:
    """A tokenizer evo trained before it carried its BOS rule (its models were trained with <s> first)."""
    specials = {k: getattr(fast, k, None) for k in SPECIALS}
    return specials == SPECIALS and fast("a")["input_ids"][:1] != [fast.bos_token_id]
