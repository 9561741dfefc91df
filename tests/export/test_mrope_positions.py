"""The numpy M-RoPE positions against HF's `get_rope_index` on real processor output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edgevlm.demo.hf_compat import load_processor
from edgevlm.demo.shapes import random_scene, render
from edgevlm.export.mrope_positions import mrope_position_ids


def _prompt(checkpoint: Path, seeds: list[int]) -> dict[str, Any]:
    processor = load_processor(checkpoint)
    content = [{"type": "image"} for _ in seeds] + [{"type": "text", "text": "How many shapes are there?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    images = [render(random_scene(seed)) for seed in seeds] or None
    return processor(text=[text], images=images, return_tensors="pt")


@pytest.mark.parametrize("seeds", [[], [3], [3, 5, 8]])
def test_positions_match_hf_get_rope_index(demo_checkpoint: Path, hf_model: Any, seeds: list[int]) -> None:
    batch = _prompt(demo_checkpoint, seeds)
    grid = batch.get("image_grid_thw")
    expected, delta = hf_model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"], grid)
    positions, next_position = mrope_position_ids(
        batch["input_ids"][0].numpy(), None if grid is None else grid.numpy(), hf_model.config.image_token_id, 2
    )
    np.testing.assert_array_equal(positions, expected[:, 0].numpy())
    # HF continues generation at cache length + delta: the first generated token sits at len + delta.
    assert next_position == batch["input_ids"].shape[1] + int(delta)


def test_image_token_count_must_match_the_grid() -> None:
    tokens = np.array([1, 9, 9, 9, 2])
    with pytest.raises(ValueError, match="consecutive image tokens"):
        mrope_position_ids(tokens, np.array([[1, 4, 4]]), 9, 2)
    with pytest.raises(ValueError, match="describes 2 images"):
        mrope_position_ids(np.array([1, 9, 2]), np.array([[1, 2, 2], [1, 2, 2]]), 9, 2)
    with pytest.raises(ValueError, match="more image tokens"):
        mrope_position_ids(np.array([9]), None, 9, 2)


def test_text_only_positions_count_up() -> None:
    positions, next_position = mrope_position_ids(np.arange(5), None, 99, 2)
    np.testing.assert_array_equal(positions, np.tile(np.arange(5), (3, 1)))
    assert next_position == 5
    assert torch.tensor(positions).dtype == torch.int64
