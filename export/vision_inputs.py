"""The vision graph's index inputs, computed in numpy from `image_grid_thw` (no torch).

GLM-4V's vision tower has three data-dependent parts that would bake a resolution into a traced
graph: the bicubic resampling of the learned position table, the 2-D rotary positions, and the
per-image attention blocks (`cu_seqlens`). They depend only on each image's patch grid, so serve
time computes them here and feeds them to `vision.onnx` (see BUNDLE.md).

Serve time must not import `edgevlm.export`: this module is meant to move to `edgevlm.runtime`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class VisionInputs:
    """Index inputs of `vision.onnx` for the images of one call, in input order."""

    pos_grid: np.ndarray  # [num_patches, 2] float32: (x=w, y=h) in [-1, 1]
    rotary_pos: np.ndarray  # [num_patches, 2] int64: (h, w) patch coordinates
    attention_bias: np.ndarray  # [num_patches, num_patches] float32: 0 within a frame, -inf across


def _check_grid(grid_thw: np.ndarray, merge_size: int) -> np.ndarray:
    grid = np.asarray(grid_thw, dtype=np.int64)
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] == 0:
        raise ValueError(f"image_grid_thw must have shape [num_images, 3], got {grid.shape}")
    if (grid <= 0).any() or (grid[:, 1:] % merge_size).any():
        raise ValueError(f"image_grid_thw rows must be positive with h, w divisible by {merge_size}: {grid}")
    return grid


def merge_block_coords(h: int, w: int, merge_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) coordinates of an h x w patch grid, listed in the processor's patch order: merge
    blocks in raster order, and the merge_size x merge_size patches of a block in raster order."""
    # hpos, wpos: [h * w]
    hgrid, wgrid = np.meshgrid(np.arange(h, dtype=np.int64), np.arange(w, dtype=np.int64), indexing="ij")
    shape = (h // merge_size, merge_size, w // merge_size, merge_size)
    hpos = hgrid.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    wpos = wgrid.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    return hpos, wpos


def rotary_positions(grid_thw: np.ndarray, merge_size: int) -> np.ndarray:
    """`rotary_pos` [num_patches, 2] int64: (h, w) of every patch, frames repeated."""
    grid = _check_grid(grid_thw, merge_size)
    parts = []
    for t, h, w in grid.tolist():
        hpos, wpos = merge_block_coords(h, w, merge_size)
        parts.append(np.tile(np.stack([hpos, wpos], axis=-1), (t, 1)))
    return np.concatenate(parts, axis=0)


def position_grid(grid_thw: np.ndarray, merge_size: int) -> np.ndarray:
    """`pos_grid` [num_patches, 2] float32: where each patch samples the learned position table,
    as grid_sample coordinates (x=w, y=h) with align_corners=False: ((coord + 0.5) / size) * 2 - 1."""
    grid = _check_grid(grid_thw, merge_size)
    parts = []
    # Same float32 operations in the same order as the HF model, so the coordinates are bit-exact.
    half, two, one = np.float32(0.5), np.float32(2.0), np.float32(1.0)
    for t, h, w in grid.tolist():
        hpos, wpos = merge_block_coords(h, w, merge_size)
        x = ((wpos.astype(np.float32) + half) / np.float32(w)) * two - one
        y = ((hpos.astype(np.float32) + half) / np.float32(h)) * two - one
        parts.append(np.tile(np.stack([x, y], axis=-1), (t, 1)))
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


def block_attention_bias(grid_thw: np.ndarray, merge_size: int) -> np.ndarray:
    """`attention_bias` [num_patches, num_patches] float32: 0 between patches of the same frame,
    -inf otherwise (GLM-4V attends within each frame of each image: `cu_seqlens`)."""
    grid = _check_grid(grid_thw, merge_size)
    lengths = np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])
    # segment: [num_patches] index of the frame each patch belongs to
    segment = np.repeat(np.arange(len(lengths)), lengths)
    same = segment[:, None] == segment[None, :]
    return np.where(same, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)


def vision_inputs(grid_thw: np.ndarray, merge_size: int) -> VisionInputs:
    """All three index inputs of `vision.onnx` for the images described by `grid_thw` [num_images, 3]."""
    return VisionInputs(
        pos_grid=position_grid(grid_thw, merge_size),
        rotary_pos=rotary_positions(grid_thw, merge_size),
        attention_bias=block_attention_bias(grid_thw, merge_size),
    )
