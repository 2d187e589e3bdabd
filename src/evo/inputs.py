"""Checking a run's input files before anything starts: a bad line fails in seconds, named by file
and line, before a Ray cluster starts or anything is written. (Light imports on purpose: no torch,
no Ray.)"""

from __future__ import annotations

from pathlib import Path

from evo.config import EvoConfig
from evo.data.ingest import IngestError, ingest_jsonl
from evo.evals.general import read_prompts, read_questions
from evo.healing.corrections import read_corrections_file
from evo.lineage.ledger import Ledger
from evo.model.gguf import architecture, resolve
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
    if (cfg.eval.general is not None or cfg.data.self_replay is not None) and pending:
        check_general_sets(cfg)
    if cfg.model.path and "gen-0" not in done:  # a GGUF base: the file, or its package, must be there

        source = resolve(cfg.model.path)
        if source.kind == "gguf":
            architecture(source.path)
    return len(files)


def check_general_sets(cfg: EvoConfig) -> None:
    """eval.general's files and data.self_replay's parse, and share no prompt: what measures general
    ability must be unseen by training."""

    g, sr = cfg.eval.general, cfg.data.self_replay
    measured, rehearsed = set(), []
    try:  # a missing file, a line that is not JSON or lacks a field: named by file (and line)
        if g is not None:
            measured = {q.prompt for q in read_questions(g.questions)} | set(read_prompts(g.open_prompts))
        if sr is not None:
            rehearsed = read_prompts(sr.prompts)
    except (ValueError, OSError) as e:
        raise IngestError(str(e)) from None
    if sr is not None:
        shared = sorted({" ".join(p.lower().split()) for p in rehearsed} & {" ".join(p.lower().split()) for p in measured})
        if shared:
            raise IngestError(f"{sr.prompts}: {len(shared)} prompt(s) of data.self_replay are also in eval.general's sets "
                              f"(e.g. {shared[0]!r}); the general evals must measure prompts no training saw")
