"""The vision graph's data-dependent inputs, from image grids alone (numpy, no torch).

Mirrors transformers' `get_vision_position_ids` (vision_utils.py), the grid-sample coordinates of
`Glm4vVisionEmbeddings.forward` and the per-frame `cu_seqlens` attention segments
(modeling_glm4v.py). Serve time must not import export/, hence this copy; tests pin it to HF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class VisionInputs:
    pos_grid: np.ndarray  # [patches, 2] float32, (x=w, y=h) in [-1, 1]
    rotary_pos: np.ndarray  # [patches, 2] int64, (h, w)
    attention_bias: np.ndarray  # [patches, patches] float32, 0 within a frame, -inf across


def rotary_positions(grid_thw: np.ndarray, merge: int) -> np.ndarray:
    """(h, w) of every patch in the processor's order: merge x merge blocks, block-major.
    # grid_thw: [images, 3] -> [patches, 2]"""
    out = []
    for t, h, w in np.asarray(grid_thw, dtype=np.int64).tolist():
        hgrid, wgrid = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        block = (h // merge, merge, w // merge, merge)
        hpos = hgrid.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        wpos = wgrid.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        out.append(np.tile(np.stack([hpos, wpos], axis=-1), (t, 1)))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), np.int64)


def grid_sample_coords(grid_thw: np.ndarray, rotary_pos: np.ndarray) -> np.ndarray:
    """Normalised sampling points into the learned position table, in float32 like HF's
    `((coord + 0.5) / size) * 2 - 1` on float32 tensors (same rounding, same result).
    # rotary_pos: [patches, 2] -> [patches, 2] (x=w, y=h)"""
    grid = np.asarray(grid_thw, dtype=np.int64)
    counts = grid.prod(axis=1)
    sizes = np.repeat(grid[:, 1:], counts, axis=0).astype(np.float32)  # [patches, 2] (h, w)
    coords = rotary_pos.astype(np.float32)
    norm = ((coords + np.float32(0.5)) / sizes) * np.float32(2) - np.float32(1)
    return np.ascontiguousarray(norm[:, ::-1]).astype(np.float32)


def frame_attention_bias(grid_thw: np.ndarray) -> np.ndarray:
    """Block-diagonal additive mask: each frame (t of every image) attends only to itself,
    exactly the segments of HF's `cu_seqlens`.
    # grid_thw: [images, 3] -> [patches, patches]"""
    grid = np.asarray(grid_thw, dtype=np.int64)
    seg_lens = np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0]).tolist()
    patches = sum(seg_lens)
    bias = np.full((patches, patches), -np.inf, dtype=np.float32)
    lo = 0
    for size in seg_lens:  # one slice per frame: no patches^2 comparison (4x faster at 1,024 patches)
        bias[lo : lo + size, lo : lo + size] = 0.0
        lo += size
    return bias


def vision_inputs(grid_thw: np.ndarray, merge: int) -> VisionInputs:
    rotary = rotary_positions(grid_thw, merge)
    return VisionInputs(
        pos_grid=grid_sample_coords(grid_thw, rotary),
        rotary_pos=rotary,
        attention_bias=frame_attention_bias(grid_thw),
    )


def attention_blocks(attention_bias: np.ndarray) -> list[tuple[int, int]]:
    """The [lo, hi) patch ranges of a block-diagonal bias's blocks (frames): a block starts where a
    patch cannot see the one before it. # attention_bias: [patches, patches] -> [(lo, hi), ...]"""
    cuts = (np.flatnonzero(np.diagonal(attention_bias, -1) != 0) + 1).tolist()
    edges = [0, *cuts, len(attention_bias)]
    return list(zip(edges[:-1], edges[1:], strict=True))
