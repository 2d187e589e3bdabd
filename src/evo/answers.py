"""Answer text compared as the evals, healing, curation and the A/B judge compare it."""

from __future__ import annotations


def normalize(text: str) -> str:
    """Whitespace folded to single spaces; case is kept (exact match is case-sensitive)."""
    return " ".join(text.split())
