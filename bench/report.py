"""Write a benchmark's latest figures into its own section of docs/benchmarks.md."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

DOC = Path(__file__).parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    import os

    return f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}"


def update_section(name: str, body: str) -> None:
    """Replace the text between <!-- bench:name --> markers (appending the section if new)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = f"_Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}._\n\n"
    block = f"{start}\n{stamp}{body.strip()}\n{end}"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(f"updated {DOC} section {name}")
