"""Progress lines for long work: a stage, how far along, how long it has taken."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, where: str, message: str) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.t0
        print(f"[evo {elapsed:6.1f}s] {where:>6} | {message}", file=self.stream, flush=True)


class Silent(Progress):
    """A Progress that says nothing (tests, library use)."""

    def __init__(self):
        super().__init__(quiet=True)
