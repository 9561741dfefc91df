"""The token embedding table as the bundle stores it (manifest `embed_tokens`), gathered by rows.

Storage: float rows (fp32/fp16, as exported), or quantized by `edgevlm quantize`:
- `int8`: int8 [vocab, hidden] with one float32 scale per row: row = q * scale;
- `int4`: uint8 [vocab, hidden / 2], two values per byte (even column in the low nibble), each
  nibble q + 8 for q in [-8, 7], and one float32 scale per block of `block` columns.
Only the rows a step needs are widened, so the table stays memory-mapped at its stored size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgevlm.runtime.bundle import BundleError

FLOAT = ("float32", "float16")
QUANTIZED = ("int8", "int4")
INT4_OFFSET = 8


class EmbedTable:
    def __init__(self, values: np.ndarray, dtype: str = "float32", scales: np.ndarray | None = None,
                 block: int = 0) -> None:
        if dtype not in FLOAT + QUANTIZED:
            raise ValueError(f"embedding table dtype {dtype!r} is not one of {FLOAT + QUANTIZED}")
        if dtype in QUANTIZED and scales is None:
            raise ValueError(f"an {dtype} embedding table needs its scales")
        self.values = values
        self.dtype = dtype
        self.scales = scales
        self.block = block

    @classmethod
    def load(cls, folder: Path, entry: dict[str, Any]) -> EmbedTable:
        """From the manifest's `embed_tokens` entry; arrays are memory-mapped. A BundleError names
        what does not fit."""
        values = np.load(folder / entry["file"], mmap_mode="r")
        dtype = entry.get("dtype", str(values.dtype))
        scales = np.load(folder / entry["scales"], mmap_mode="r") if entry.get("scales") else None
        try:
            return cls(values, dtype, scales, int(entry.get("block", 0)))
        except ValueError as exc:
            raise BundleError(f"{folder / entry['file']}: {exc}") from None

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + (0 if self.scales is None else self.scales.nbytes)

    def rows(self, ids: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """ids: any shape -> ids.shape + (hidden,) in `dtype`."""
        if self.dtype in FLOAT:
            return np.asarray(self.values[ids], dtype=dtype)
        assert self.scales is not None
        if self.dtype == "int8":
            return (self.values[ids].astype(np.float32) * self.scales[ids][..., None]).astype(dtype, copy=False)
        packed = self.values[ids]  # [..., hidden / 2]
        q = np.empty(packed.shape[:-1] + (2 * packed.shape[-1],), np.float32)
        q[..., 0::2] = packed & 0x0F
        q[..., 1::2] = packed >> 4
        q -= INT4_OFFSET
        blocks = q.reshape(q.shape[:-1] + (-1, self.block)) * self.scales[ids][..., None]
        return blocks.reshape(q.shape).astype(dtype, copy=False)
