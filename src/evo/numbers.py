"""How evo writes a number that may be missing, in one place, so the ledger, the trial CSVs, the
CLI, the progress lines and the report agree."""

from __future__ import annotations

import math
from typing import Any, Optional


def missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def show(x: Optional[float], spec: str = ".2f", blank: str = "n/a") -> str:
    """For people: `spec`-formatted, or `blank` ("n/a") when there is no number."""
    return blank if missing(x) else format(x, spec)


def cell(x: Any) -> str:
    """For a CSV cell: floats to 6 significant digits, other values as text, nothing for a missing one."""
    if missing(x):
        return ""
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def parse(text: Any) -> Optional[float]:
    """A CSV cell back to a number; None for an empty or non-numeric one."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
