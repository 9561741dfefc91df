"""The numpy vision inputs against transformers' own torch code for the same grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

from edgevlm.export.vision_inputs import block_attention_bias, position_grid, rotary_positions, vision_inputs

GRIDS = [[[1, 2, 2]], [[1, 8, 12]], [[1, 16, 26], [1, 26, 16]], [[1, 4, 6], [2, 6, 4], [1, 2, 10]]]


@pytest.mark.parametrize("grid", GRIDS)
def test_rotary_positions_match_hf(grid: list[list[int]]) -> None:
    expected = get_vision_position_ids(torch.tensor(grid), 2).numpy()
    np.testing.assert_array_equal(rotary_positions(np.array(grid), 2), expected)


@pytest.mark.parametrize("grid", GRIDS)
def test_position_grid_is_bit_exact_with_hf_formula(grid: list[list[int]]) -> None:
    thw = torch.tensor(grid)
    coords = get_vision_position_ids(thw, 2)
    # Glm4vVisionEmbeddings.forward: each patch's own image size, float32 arithmetic.
    sizes = torch.repeat_interleave(thw[:, 1:], thw.prod(-1), dim=0).to(torch.float32)
    norm_w = ((coords[:, 1] + 0.5) / sizes[:, 1]) * 2 - 1
    norm_h = ((coords[:, 0] + 0.5) / sizes[:, 0]) * 2 - 1
    expected = torch.stack((norm_w, norm_h), dim=-1).numpy()
    got = position_grid(np.array(grid), 2)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("grid", GRIDS)
def test_attention_bias_is_block_diagonal_over_cu_seqlens(grid: list[list[int]]) -> None:
    cu = get_vision_cu_seqlens(torch.tensor(grid)).tolist()
    n = cu[-1]
    expected = np.full((n, n), -np.inf, np.float32)
    for start, stop in zip(cu[:-1], cu[1:], strict=True):
        expected[start:stop, start:stop] = 0
    np.testing.assert_array_equal(block_attention_bias(np.array(grid), 2), expected)


def test_vision_inputs_bundles_all_three() -> None:
    inputs = vision_inputs(np.array([[1, 4, 6]]), 2)
    assert inputs.pos_grid.shape == inputs.rotary_pos.shape == (24, 2)
    assert inputs.rotary_pos.dtype == np.int64
    assert inputs.attention_bias.shape == (24, 24)


@pytest.mark.parametrize("grid", [[[1, 3, 4]], [[0, 2, 2]], [1, 2, 2]])
def test_bad_grids_are_refused(grid: list) -> None:
    with pytest.raises(ValueError, match="image_grid_thw"):
        vision_inputs(np.array(grid), 2)


def test_serve_time_helpers_import_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, edgevlm.export.vision_inputs, edgevlm.export.mrope_positions; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
