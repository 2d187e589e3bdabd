"""Checking a run's input files before anything starts: a bad line fails in seconds, named by file
and line, before a Ray cluster starts or anything is written. (Light imports on purpose: no torch,
no Ray.)"""

from __future__ import annotations

from pathlib import Path

from evo.config import EvoConfig
from evo.data.ingest import IngestError, ingest_jsonl
from evo.evals.general import read_prompts, read_questions
from evo.evals.suite import load_probes
from evo.healing.corrections import read_corrections_file
from evo.lineage.ledger import Ledger
from evo.model.gguf import architecture, resolve
from evo.nearcopy import THRESHOLD, near_copies, questions
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
    if pending:
        check_probe_sets(cfg)
    if cfg.model.path and "gen-0" not in done:  # a GGUF base: the file, or its package, must be there

        source = resolve(cfg.model.path)
        if source.kind == "gguf":
            architecture(source.path)
    return len(files)


def check_general_sets(cfg: EvoConfig) -> None:
    """eval.general's files and data.self_replay's parse, and no self-replay prompt is a near-copy
    (`evo.nearcopy`) of a measured one: what measures general ability must be unseen by training."""

    g, sr = cfg.eval.general, cfg.data.self_replay
    measured, rehearsed = [], []
    try:  # a missing file, a line that is not JSON or lacks a field: named by file (and line)
        if g is not None:
            measured = [q.prompt for q in read_questions(g.questions)] + read_prompts(g.open_prompts)
        if sr is not None:
            rehearsed = read_prompts(sr.prompts)
    except (ValueError, OSError) as e:
        raise IngestError(str(e)) from None
    if sr is not None:
        shared = near_copies(rehearsed, measured)
        if shared:
            (mine, theirs, score), *_ = shared
            raise IngestError(f"{sr.prompts}: {len(shared)} prompt(s) of data.self_replay are near-copies of "
                              f"eval.general's (e.g. {mine!r} and {theirs!r}: word overlap {score:.2f}, at or over "
                              f"{THRESHOLD}); the general evals must measure prompts no training saw")


def check_probe_sets(cfg: EvoConfig) -> None:
    """eval.val_probes (what chooses: a sweep's winner) parse and none is a near-copy of eval.probes
    (what is reported): selection must never see what is reported."""
    if cfg.eval.val_probes is None:
        return
    try:
        chosen_on, reported = load_probes(cfg.eval.val_probes), load_probes(cfg.eval.probes)
    except (ValueError, OSError) as e:
        raise IngestError(str(e)) from None
    shared = near_copies([q for p in chosen_on for q in questions(p)], [q for p in reported for q in questions(p)])
    if shared:
        (mine, theirs, score), *_ = shared
        raise IngestError(f"{cfg.eval.val_probes}: {len(shared)} of eval.val_probes are near-copies of eval.probes "
                          f"(e.g. {mine!r} and {theirs!r}: word overlap {score:.2f}); the probes that choose must be "
                          "apart from the probes that report")
