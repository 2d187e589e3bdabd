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


class Stopwatch:
    """Wall seconds per named phase of a piece of work, summed over its repeats (`with watch("evals"):`)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def __call__(self, name: str) -> _Phase:
        return _Phase(self, name)

    def total(self) -> float:
        return time.perf_counter() - self._t0


class _Phase:
    def __init__(self, watch: Stopwatch, name: str):
        self.watch, self.name = watch, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.watch.seconds[self.name] = self.watch.seconds.get(self.name, 0.0) + time.perf_counter() - self.t0
