"""The token embedding table quantized for a quantized bundle (the format is read by
`runtime/embed_table.py`): int8 with a scale per row, or int4 in blocks with a scale per block.

Rule: the table is only gathered (a handful of rows per step), never multiplied, so its precision
costs memory and disk, not speed; symmetric rounding to nearest with the scale set by each row's
(block's) largest magnitude keeps every row's direction. At real-model sizes it is ~1/16 of the
weights; at small ones (the 0.5 B bench model: 620 MB of 2 GB) it decides the bundle size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INT4_BLOCK = 32
INT4_OFFSET = 8


def quantize_int8(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[vocab, hidden] float -> (int8 values, float32 scale per row)."""
    table = np.asarray(table, np.float32)
    scales = np.abs(table).max(axis=1) / 127.0
    scales[scales == 0] = 1.0  # an all-zero row stays zero
    values = np.clip(np.rint(table / scales[:, None]), -127, 127).astype(np.int8)
    return values, scales.astype(np.float32)


def quantize_int4(table: np.ndarray, block: int = INT4_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """[vocab, hidden] float -> (uint8 [vocab, hidden / 2] two nibbles a byte, float32 [vocab, hidden / block])."""
    table = np.asarray(table, np.float32)
    vocab, hidden = table.shape
    if hidden % block:
        raise ValueError(f"hidden size {hidden} is not a multiple of the int4 block {block}")
    blocks = table.reshape(vocab, hidden // block, block)
    scales = np.abs(blocks).max(axis=2) / 7.0
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(blocks / scales[..., None]), -8, 7).astype(np.int16).reshape(vocab, hidden) + INT4_OFFSET
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    return packed, scales.astype(np.float32)


def write_quantized(src_folder: Path, src_entry: dict[str, Any], dst_folder: Path, mode: str,
                    chunk_rows: int = 8192) -> dict[str, Any]:
    """Quantize the source bundle's table into `dst_folder` (same file name, plus a scales file),
    `chunk_rows` rows at a time so memory stays at one chunk; returns the manifest entry."""
    source = np.load(src_folder / src_entry["file"], mmap_mode="r")
    vocab, hidden = source.shape
    use_int4 = mode == "int4" and hidden % INT4_BLOCK == 0
    width = hidden // 2 if use_int4 else hidden
    values = np.lib.format.open_memmap(dst_folder / src_entry["file"], mode="w+",
                                       dtype=np.uint8 if use_int4 else np.int8, shape=(vocab, width))
    scales = np.empty((vocab, hidden // INT4_BLOCK) if use_int4 else (vocab,), np.float32)
    for lo in range(0, vocab, chunk_rows):
        hi = min(lo + chunk_rows, vocab)
        values[lo:hi], scales[lo:hi] = (quantize_int4 if use_int4 else quantize_int8)(source[lo:hi])
    values.flush()
    del values
    scales_file = f"{Path(src_entry['file']).stem}.scales.npy"
    np.save(dst_folder / scales_file, scales, allow_pickle=False)
    entry = {"file": src_entry["file"], "shape": [vocab, hidden], "scales": scales_file,
             "source_dtype": src_entry.get("dtype")}
    if use_int4:
        return {**entry, "dtype": "int4", "storage": "uint8", "block": INT4_BLOCK,
                "scheme": f"int4 symmetric, a float32 scale per block of {INT4_BLOCK}, two values per byte"}
    return {**entry, "dtype": "int8", "storage": "int8", "scheme": "int8 symmetric, a float32 scale per row"}
