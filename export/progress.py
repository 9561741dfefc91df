"""The export's progress display: one line per stage step, with its time."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO

STAGES: tuple[str, ...] = ("load", "trace", "convert", "optimise", "validate")


class Progress:
    """Prints `[2/5] trace     vision graph ... ok 3.1 s` lines and keeps each stage's total time.
    Other long commands (quantize) reuse it with their own `stages`."""

    stages: tuple[str, ...] = STAGES

    def __init__(self, stream: TextIO | None = sys.stderr) -> None:
        self.stream = stream
        self.seconds: dict[str, float] = {}

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()

    @contextlib.contextmanager
    def stage(self, name: str, detail: str) -> Iterator[None]:
        """Time one step of a stage; a failing step is marked `failed` and its error propagates."""
        if name not in self.stages:
            raise ValueError(f"stage must be one of {self.stages}, got {name!r}")
        self._write(f"[{self.stages.index(name) + 1}/{len(self.stages)}] {name:<9} {detail} ... ")
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self._write("failed\n")
            raise
        elapsed = time.perf_counter() - start
        self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 2)
        self._write(f"ok {elapsed:.1f} s\n")

    def note(self, text: str) -> None:
        """An indented detail line under the last step."""
        self._write(f"      {text}\n")
