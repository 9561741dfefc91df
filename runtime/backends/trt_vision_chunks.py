"""Split a vision batch into calls that fit the vision engine's patch range (pure numpy).

Patches attend only within their frame (the block-diagonal `attention_bias`), and the merger
joins merge x merge neighbours of one frame, so cutting between frames changes nothing: the
embeddings of the parts, concatenated, are those of the whole. Frames are found from the bias
itself: a frame starts where a patch cannot see the patch before it.
"""

from __future__ import annotations

import numpy as np

from edgevlm.runtime.backends.base import VisionBatch


def frame_starts(attention_bias: np.ndarray) -> list[int]:
    """Index of every frame's first patch. # attention_bias: [patches, patches]"""
    patches = attention_bias.shape[0]
    if patches == 0:
        return []
    idx = np.arange(1, patches)
    cut = ~np.isfinite(attention_bias[idx, idx - 1]) | (attention_bias[idx, idx - 1] < -1e29)
    return [0, *(idx[cut].tolist())]


def chunk_bounds(starts: list[int], patches: int, max_patches: int) -> list[tuple[int, int]]:
    """Greedy [lo, hi) patch ranges of whole frames, each <= max_patches; a frame larger than
    max_patches is a ValueError (the engine was built for smaller images)."""
    ends = [*starts[1:], patches]
    bounds: list[tuple[int, int]] = []
    for lo, hi in zip(starts, ends, strict=True):
        if hi - lo > max_patches:
            raise ValueError(f"an image frame of {hi - lo} patches exceeds the vision engine's {max_patches}")
        if bounds and hi - bounds[-1][0] <= max_patches:
            bounds[-1] = (bounds[-1][0], hi)
        else:
            bounds.append((lo, hi))
    return bounds


def split_vision_batch(batch: VisionBatch, max_patches: int) -> list[VisionBatch]:
    patches = batch.pixel_values.shape[0]
    if patches <= max_patches:
        return [batch]
    bounds = chunk_bounds(frame_starts(batch.attention_bias), patches, max_patches)
    return [
        VisionBatch(
            pixel_values=batch.pixel_values[lo:hi],
            pos_grid=batch.pos_grid[lo:hi],
            rotary_pos=batch.rotary_pos[lo:hi],
            attention_bias=np.ascontiguousarray(batch.attention_bias[lo:hi, lo:hi]),
        )
        for lo, hi in bounds
    ]
