"""Quantize's progress lines: `[3/6] quantize  decoder graph ... ok 4.2 s`, one per step."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TextIO

STAGES: tuple[str, ...] = ("calibrate", "prepare", "quantize", "evaluate", "gate", "write")


class Progress:
    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.seconds: dict[str, float] = {}

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()

    @contextlib.contextmanager
    def stage(self, name: str, detail: str) -> Iterator[None]:
        """Time one step; a failing step prints `failed` and its error propagates."""
        if name not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {name!r}")
        self._write(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name:<9} {detail} ... ")
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
        self._write(f"      {text}\n")
