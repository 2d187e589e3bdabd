"""Checking a run's input files before anything starts: a bad line fails in seconds, named by file
and line, before a Ray cluster starts or anything is written. (Light imports on purpose: no torch,
no Ray.)"""

from __future__ import annotations

from pathlib import Path

from evo.config import EvoConfig
from evo.data.ingest import ingest_jsonl
from evo.healing.corrections import read_corrections_file
from evo.lineage.ledger import Ledger
from evo.storage import is_uri


def check_inputs(cfg: EvoConfig, root: str | Path) -> int:
    """Validate every file the generations not yet in the ledger will read: the base corpus, the
    deltas and their corrections, eval.general's sets, and a GGUF base's header. Raises IngestError (or CorrectionError,
    GGUFError); returns the data files checked."""
    ledger = None if is_uri(root) else Ledger(root)  # a URI root: check every file
    done = {r["GEN_ID"] for r in ledger.rows()} if ledger else set()
    files = [cfg.data.base] if cfg.data.base and "gen-0" not in done else []
    pending = [i for i in range(1, len(cfg.data.generations) + 1) if f"gen-{i}" not in done]
    files += [cfg.data.generations[i - 1] for i in pending]
    for path in files:
        ingest_jsonl(path, skip_invalid=cfg.data.skip_invalid, max_chars=cfg.data.max_chars)
    for i in pending:
        if i in cfg.data.corrections:
            read_corrections_file(cfg.data.corrections[i])
    if cfg.eval.general is not None and pending:
        from evo.evals.general import read_prompts, read_questions

        read_questions(cfg.eval.general.questions)
        read_prompts(cfg.eval.general.open_prompts)
    if cfg.model.path and "gen-0" not in done:  # a GGUF base: the file, or its package, must be there
        from evo.model.gguf import architecture, resolve

        source = resolve(cfg.model.path)
        if source.kind == "gguf":
            architecture(source.path)
    return len(files)
