"""GLM-4V's 3-D (t, h, w) M-RoPE positions, in numpy, exactly as HF `Glm4vModel.get_rope_index`.

Rule: text tokens advance all three axes together by one; an image's merged tokens take
(t=start, h=start+row, w=start+col), and the position after the image is start + max(rows, cols).
Generated tokens continue from max(prompt positions) + 1 on all three axes: `delta` below.
"""

from __future__ import annotations

import itertools

import numpy as np

TEXT, IMAGE = 0, 1


def token_types(input_ids: np.ndarray, image_token_id: int) -> np.ndarray:
    """0 for text, 1 for image placeholders (videos are not served).
    # input_ids: [seq] -> [seq]"""
    return (np.asarray(input_ids) == image_token_id).astype(np.int64)


def rope_index(types: np.ndarray, image_grids: np.ndarray, merge: int) -> tuple[np.ndarray, int]:
    """Positions of one prompt and its delta (next position - prompt length).
    # types: [seq]; image_grids: [images, 3] (t, h, w) in patches -> positions [3, seq]"""
    grids = iter(np.asarray(image_grids, dtype=np.int64).reshape(-1, 3).tolist())
    parts: list[np.ndarray] = []
    current = 0
    for kind, group in itertools.groupby(np.asarray(types).tolist()):
        length = len(list(group))
        if kind == TEXT:
            parts.append(np.broadcast_to(np.arange(length, dtype=np.int64) + current, (3, length)))
            current += length
            continue
        # HF takes one grid per run of image tokens (begin/end-of-image tokens separate images).
        t, h, w = next(grids)
        block = _image_positions(current, t, h // merge, w // merge)
        if block.shape[1] != length:
            raise ValueError(f"an image run has {length} placeholder tokens, its grid makes {block.shape[1]}")
        parts.append(block)
        current += max(h, w) // merge
    positions = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), np.int64)
    delta = int(positions.max()) + 1 - positions.shape[1] if positions.size else 0
    return np.ascontiguousarray(positions), delta


def _image_positions(start: int, t: int, h: int, w: int) -> np.ndarray:
    # HF: meshgrid(arange(t), arange(h) + start, arange(w) + start), then t += start.
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h) + start, np.arange(w) + start, indexing="ij")
    return np.stack([tt + start, hh, ww]).reshape(3, -1).astype(np.int64)


def decode_positions(lengths: np.ndarray, deltas: np.ndarray, count: int = 1) -> np.ndarray:
    """Positions of tokens appended after the prompt: the same value on all three axes.
    # lengths, deltas: [batch] -> [3, batch, count]"""
    steps = np.asarray(lengths, dtype=np.int64)[:, None] + np.arange(count, dtype=np.int64)[None, :]
    pos = steps + np.asarray(deltas, dtype=np.int64)[:, None]
    return np.broadcast_to(pos, (3, *pos.shape)).copy()
