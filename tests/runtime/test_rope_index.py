"""The runtime's numpy M-RoPE positions against HF's `get_rope_index` on real processor output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevlm.demo.hf_compat import load_processor
from edgevlm.demo.shapes import random_scene, render
from edgevlm.runtime.rope_index import decode_positions, rope_index, token_types


def _prompt(checkpoint: Path, seeds: list[int]) -> dict[str, Any]:
    processor = load_processor(checkpoint)
    content = [{"type": "image"} for _ in seeds] + [{"type": "text", "text": "How many shapes are there?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    images = [render(random_scene(seed)) for seed in seeds] or None
    return processor(text=[text], images=images, return_tensors="pt")


@pytest.mark.parametrize("seeds", [[], [3], [3, 5, 8]])
def test_positions_match_hf_get_rope_index(checkpoint_dir: Path, hf_model: Any, seeds: list[int]) -> None:
    batch = _prompt(checkpoint_dir, seeds)
    grid = batch.get("image_grid_thw")
    expected, hf_delta = hf_model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"], grid)
    ids = batch["input_ids"][0].numpy()
    grids = np.zeros((0, 3), np.int64) if grid is None else grid.numpy()
    positions, delta = rope_index(token_types(ids, hf_model.config.image_token_id), grids, 2)
    np.testing.assert_array_equal(positions, expected[:, 0].numpy())
    # HF continues generation at cache length + delta.
    assert delta == int(hf_delta)
    np.testing.assert_array_equal(decode_positions(np.array([len(ids)]), np.array([delta]))[:, 0, 0],
                                  np.full(3, len(ids) + delta))


def test_image_token_count_must_match_the_grid() -> None:
    types = np.array([0, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="placeholder tokens"):
        rope_index(types, np.array([[1, 4, 4]]), 2)


def test_text_only_positions_count_up() -> None:
    positions, delta = rope_index(np.zeros(5, np.int64), np.zeros((0, 3), np.int64), 2)
    np.testing.assert_array_equal(positions, np.tile(np.arange(5), (3, 1)))
    assert delta == 0 and positions.dtype == np.int64
