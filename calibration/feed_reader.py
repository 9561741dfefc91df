"""Recorded graph inputs as ONNX Runtime's `CalibrationDataReader`, the interface every ORT
calibrator (MinMax, Entropy, Percentile) and weight-only algorithm (GPTQ) consumes."""

from __future__ import annotations

from collections.abc import Sequence

from onnxruntime.quantization import CalibrationDataReader

from edgevlm.calibration.recorder import Feed


class FeedReader(CalibrationDataReader):
    """Yields the feeds in order; `rewind` starts over (GPTQ and strided calibration read twice)."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        self._feeds = list(feeds)
        self._start, self._end = 0, len(self._feeds)
        self._next = 0

    def get_next(self) -> Feed | None:
        if self._next >= self._end:
            return None
        feed = self._feeds[self._next]
        self._next += 1
        return feed

    def __len__(self) -> int:
        return len(self._feeds)

    def rewind(self) -> None:
        self._next = self._start

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self._feeds))
        self._next = self._start
