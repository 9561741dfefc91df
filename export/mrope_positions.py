"""The decoder's M-RoPE `position_ids` for one prompt, in numpy (no torch): HF's `get_rope_index`.

Text tokens advance all three axes (t, h, w) together; the tokens of an image get (t, h, w) grid
coordinates offset by the position where the image starts, and the next token continues at
start + max(h, w) / merge. Generated tokens continue from `next_position` on all three axes.

Serve time must not import `edgevlm.export`: this module is meant to move to `edgevlm.runtime`.
"""

from __future__ import annotations

import numpy as np


def image_positions(start: int, grid: tuple[int, int, int], merge_size: int) -> np.ndarray:
    """[3, tokens] int64 positions of one image's merged tokens, raster order over (t, h, w)."""
    t, h, w = grid[0], grid[1] // merge_size, grid[2] // merge_size
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)]).astype(np.int64) + start


def mrope_position_ids(
    token_ids: np.ndarray, image_grid_thw: np.ndarray | None, image_token_id: int, merge_size: int
) -> tuple[np.ndarray, int]:
    """Positions [3, seq] int64 of a prompt's tokens, and the position of the first generated token.

    `image_grid_thw` [num_images, 3] lists the prompt's images in order; each image occupies
    t * (h / merge) * (w / merge) consecutive `image_token_id` tokens."""
    tokens = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    grids = [] if image_grid_thw is None else [(int(t), int(h), int(w)) for t, h, w in np.asarray(image_grid_thw)]
    parts: list[np.ndarray] = []
    position, i, image = 0, 0, 0
    while i < len(tokens):
        if tokens[i] != image_token_id:
            # a run of text tokens
            end = i + 1
            while end < len(tokens) and tokens[end] != image_token_id:
                end += 1
            parts.append(np.broadcast_to(np.arange(position, position + end - i), (3, end - i)))
            position += end - i
            i = end
            continue
        if image >= len(grids):
            raise ValueError("token_ids holds more image tokens than image_grid_thw describes")
        grid = grids[image]
        count = grid[0] * (grid[1] // merge_size) * (grid[2] // merge_size)
        if not (tokens[i : i + count] == image_token_id).all():
            raise ValueError(f"image {image} needs {count} consecutive image tokens at offset {i}")
        parts.append(image_positions(position, grid, merge_size))
        position += max(grid[1], grid[2]) // merge_size
        i += count
        image += 1
    if image != len(grids):
        raise ValueError(f"image_grid_thw describes {len(grids)} images, token_ids holds {image}")
    positions = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), np.int64)
    next_position = int(positions.max()) + 1 if positions.size else 0
    return np.ascontiguousarray(positions, dtype=np.int64), next_position
