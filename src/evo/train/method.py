"""Which records a training method takes (no torch here: the fine-tuning API checks a job's files with it)."""

from __future__ import annotations

METHODS = ("supervised", "dpo")


def method_problem(method: str, records: list, what: str) -> str | None:
    """Why `records` (`what`: a delta, a file) cannot train with `method`, or None: a dpo generation needs
    preference records; a supervised one takes none (their rejected answers would be dropped unsaid)."""
    n = sum(r.kind == "preference" for r in records)
    if method == "dpo" and n == 0:
        return f"{what} holds no preference records (a prompt, a chosen and a rejected answer): DPO has nothing to learn from"
    if method == "supervised" and n:
        return (f"{what} holds {n} preference record(s): train them with method dpo (train.method: dpo; a "
                'fine-tuning job\'s method {"type": "dpo"})')
    return None
