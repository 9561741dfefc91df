"""The vision graph's numpy inputs equal what HF's Glm4vVisionModel computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import vision_utils
from transformers.models.glm4v import modeling_glm4v
from transformers.models.glm4v.configuration_glm4v import Glm4vVisionConfig

from edgevlm.runtime.vision_inputs import (
    attention_blocks,
    frame_attention_bias,
    grid_sample_coords,
    rotary_positions,
    vision_inputs,
)

GRIDS = np.array([[1, 16, 32], [1, 8, 8], [1, 32, 32], [1, 4, 6]], np.int64)


def test_rotary_positions_match_hf() -> None:
    ours = rotary_positions(GRIDS, merge=2)
    theirs = vision_utils.get_vision_position_ids(torch.from_numpy(GRIDS), 2).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_grid_sample_coordinates_match_hf_bitwise(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = {}
    real = torch.nn.functional.grid_sample

    def spy(table, grid, **kwargs):
        captured["grid"] = grid
        return real(table, grid, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grid_sample", spy)
    config = Glm4vVisionConfig(hidden_size=8, image_size=28, patch_size=14)
    embeddings = modeling_glm4v.Glm4vVisionEmbeddings(config)
    grid_thw = torch.from_numpy(GRIDS)
    pos = vision_utils.get_vision_position_ids(grid_thw, 2)
    lengths = grid_thw.prod(-1)
    embeddings(torch.zeros(int(lengths.sum()), 8), lengths, grid_thw, pos[:, 0], pos[:, 1])
    theirs = captured["grid"][0, :, 0].numpy()  # [patches, 2] (x=w, y=h)
    ours = grid_sample_coords(GRIDS, rotary_positions(GRIDS, 2))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)


def test_attention_bias_is_cu_seqlens_block_diagonal() -> None:
    grids = np.array([[1, 4, 4], [2, 2, 4], [1, 2, 2]], np.int64)
    cu = vision_utils.get_vision_cu_seqlens(torch.from_numpy(grids)).tolist()
    bias = frame_attention_bias(grids)
    assert bias.shape == (cu[-1], cu[-1])
    for i in range(cu[-1]):
        segment = next(s for s in range(len(cu) - 1) if cu[s] <= i < cu[s + 1])
        row = np.isfinite(bias[i])
        assert row[cu[segment] : cu[segment + 1]].all() and row.sum() == cu[segment + 1] - cu[segment]


def test_attention_blocks_are_the_cu_seqlens_segments() -> None:
    grids = np.array([[1, 4, 4], [2, 2, 4], [1, 2, 2]], np.int64)
    cu = vision_utils.get_vision_cu_seqlens(torch.from_numpy(grids)).tolist()
    assert attention_blocks(frame_attention_bias(grids)) == list(zip(cu[:-1], cu[1:], strict=True))
    assert attention_blocks(frame_attention_bias(np.array([[1, 2, 2]]))) == [(0, 4)]


def test_bundle_contract_types() -> None:
    inputs = vision_inputs(GRIDS, 2)
    assert inputs.pos_grid.dtype == np.float32 and inputs.rotary_pos.dtype == np.int64
    assert inputs.attention_bias.dtype == np.float32
    assert len(inputs.pos_grid) == len(inputs.rotary_pos) == GRIDS.prod(1).sum()
