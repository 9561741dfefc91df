"""Quantize's progress lines: `[3/6] quantize  decoder graph ... ok 4.2 s`, one per step."""

from __future__ import annotations

from typing import TextIO

from edgevlm.export.progress import Progress as StageProgress

STAGES: tuple[str, ...] = ("calibrate", "prepare", "quantize", "evaluate", "gate", "write")


class Progress(StageProgress):
    stages = STAGES

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream)
