"""Export a generation for use outside evo: a merged Hugging Face folder, or a llama.cpp GGUF file.

- merged: the base with every adapter of the generation's line merged in, saved with
  `save_pretrained` (safetensors), the tokenizer (and chat template), and a `meta.json` naming the
  generation, its sha and line, and the base's origin. Plain `AutoModelForCausalLM` loads it.
- gguf: the same merged weights written with the `gguf` package (no llama.cpp binaries): llama.cpp's
  tensor names, Q and K rows in llama.cpp's rotary order, f16 or q8_0 (norms stay f32), and the
  tokenizer as llama.cpp reads a byte-level BPE one (tokens, types, merges, special ids, whether a
  BOS is added, the chat template). Llama-architecture models only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from evo.atomic import atomic_write_text
from evo.config import ConfigError
from evo.lineage.registry import Registry
from evo.model.artifacts import ModelStore
from evo.model.lineage_model import load_generation
from evo.storage import open_root

OUTTYPES = ("f16", "q8_0")


class ExportError(ConfigError):
    """A generation cannot be exported as asked; the message says why."""


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's Q/K row order to llama.cpp's (pairs interleaved per head): the inverse of what
    llama.cpp's readers, transformers' included, undo on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def adds_bos(tok) -> bool:
    """Whether the tokenizer's own rule starts a text with BOS."""
    if tok.bos_token_id is None:
        return False
    with_rule, without = tok("a")["input_ids"], tok("a", add_special_tokens=False)["input_ids"]
    return with_rule[:1] == [tok.bos_token_id] and without[:1] != [tok.bos_token_id]


def _tokenizer_fields(tok) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, llama.cpp token types, merges) of a byte-level BPE fast tokenizer."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise ExportError(f"GGUF export writes byte-level BPE tokenizers; this one is {model.get('type')!r}")
    vocab: dict[str, int] = dict(model["vocab"])
    specials = {}
    for t in spec.get("added_tokens") or []:
        vocab[t["content"]] = t["id"]
        specials[t["id"]] = t.get("special", False)
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    for t, i in vocab.items():
        tokens[i] = t
    types = [1] * n  # NORMAL
    for i, special in specials.items():
        types[i] = 3 if special else 4  # CONTROL, USER_DEFINED
    for i, t in enumerate(tokens):
        if t == f"[PAD{i}]":
            types[i] = 5  # UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return tokens, types, merges


def write_gguf(model, tok, path: str | Path, outtype: str = "f16", pre: str = "gpt-2", name: str = "") -> Path:
    """Write a Llama-architecture `model` and its tokenizer as one GGUF file."""
    import gguf
    import torch

    if outtype not in OUTTYPES:
        raise ExportError(f"--outtype {outtype!r}: use one of {', '.join(OUTTYPES)}")
    c = model.config
    if c.model_type != "llama":
        raise ExportError(f"GGUF export writes Llama-architecture models; this one is {c.model_type!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    n_layers, n_head, n_kv = c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    w = gguf.GGUFWriter(str(part), "llama")
    w.add_name(name or "evo export")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(_rope_theta(c))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    tokens, types, merges = _tokenizer_fields(tok)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for setter, tid in ((w.add_bos_token_id, tok.bos_token_id), (w.add_eos_token_id, tok.eos_token_id),
                        (w.add_pad_token_id, tok.pad_token_id), (w.add_unk_token_id, tok.unk_token_id)):
        if tid is not None:
            setter(tid)
    w.add_add_bos_token(adds_bos(tok))
    if getattr(tok, "chat_template", None):
        w.add_chat_template(tok.chat_template)
    tied = getattr(c, "tie_word_embeddings", False)
    for key, tensor in model.state_dict().items():
        if tied and key == "lm_head.weight":
            continue  # llama.cpp ties the output to the token embeddings when output.weight is absent
        gname = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ExportError(f"GGUF export: no llama.cpp name for tensor {key}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if gname.endswith("attn_q.weight"):
            data = permute_rotary(data, n_head)
        elif gname.endswith("attn_k.weight"):
            data = permute_rotary(data, n_kv)
        if data.ndim == 1:
            w.add_tensor(gname, data.astype(np.float32))  # norms stay f32, as llama.cpp keeps them
        elif outtype == "q8_0" and data.shape[-1] % 32 == 0:
            w.add_tensor(gname, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gname, data.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    part.replace(path)
    return path


def export_generation(root: str | Path, gen: str, dest: str | Path, fmt: str = "merged", outtype: str = "f16",
                      dtype: str = "float32") -> Path:
    """Write generation `gen` (a generation id, a sha or sha prefix, or 'champion') to `dest`: a
    folder (merged) or a .gguf file (gguf)."""

    reg, store = Registry(root), ModelStore(root)
    sha = reg.find(gen)
    if not sha:
        raise ExportError(f"{root}: no generation or model {gen!r} (see `evo ledger`)")
    chain = store.chain(sha)
    base_meta = store.meta(chain[0])
    gen_id = (reg.model(sha) or {}).get("gen_id") or sha[:12]
    model, tok = load_generation(root, sha, dtype)
    dest = Path(dest)
    meta = {"gen_id": gen_id, "sha": sha, "line": chain, "format": fmt, "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "base": {k: base_meta[k] for k in ("model_path", "gguf_file", "gguf_sha256", "package", "package_version")
                     if base_meta.get(k)}}
    if fmt == "merged":
        dest.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(dest), safe_serialization=True)
        tok.save_pretrained(str(dest))
        atomic_write_text(dest / "meta.json", json.dumps(meta, indent=1) + "\n")
        return dest
    if fmt == "gguf":
        if dest.suffix != ".gguf":
            dest = dest / f"{gen_id}.{outtype}.gguf"
        out = write_gguf(model, tok, dest, outtype, base_meta.get("gguf_pre") or "gpt-2", f"{gen_id} ({sha[:12]})")
        atomic_write_text(out.with_suffix(".json"), json.dumps({**meta, "outtype": outtype}, indent=1) + "\n")
        return out
    raise ExportError(f"--format {fmt!r}: use merged or gguf")


def cmd_export(root: str, gen: str, fmt: str, outtype: str, out: str | None) -> int:
    """`evo export GEN`: write it, then say what reads the result."""
    local = open_root(root)
    out = out or str(local / "exports" / (gen + ("" if fmt == "merged" else f".{outtype}.gguf")))
    print(f"exporting {gen} as {fmt}{'' if fmt == 'merged' else ' ' + outtype} to {out}", flush=True)
    path = export_generation(local, gen, out, fmt, outtype)
    if fmt == "merged":
        print(f"wrote {path}: AutoModelForCausalLM.from_pretrained({str(path)!r}) loads it")
    else:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): llama.cpp reads it; so does "
              f"AutoModelForCausalLM.from_pretrained({str(path.parent)!r}, gguf_file={path.name!r})")
    return 0
