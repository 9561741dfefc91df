"""vision.cpu.onnx, the vision tower's CPU form (one attention block per call, fused unmasked
attention, fused rotary): its nodes and inputs. Its outputs against HF, block by block, are tested with the
portable graph's in test_onnx_graphs.py."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
import torch.nn.functional as F


def test_fused_attention_and_no_mask_input(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    model = onnx.load(str(bundle_dir / "vision.cpu.onnx"), load_external_data=False)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    depth = manifest["architecture"]["vision"]["depth"]
    assert ops["MultiHeadAttention"] == depth
    assert ops["RotaryEmbedding"] == depth and ops["Neg"] == 0  # queries and keys rotated in one op
    assert ops["Softmax"] == 0
    assert [i.name for i in model.graph.input] == ["pixel_values", "pos_grid", "rotary_pos"]
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"vision.onnx.data"} and not (bundle_dir / "vision.cpu.onnx.data").exists()
    assert manifest["graphs"]["vision"]["cpu_form"]["external_data"] == "vision.onnx.data"


def test_no_grid_sample_and_no_transpose_of_patches(bundle_dir: Path) -> None:
    model = onnx.load(str(bundle_dir / "vision.cpu.onnx"), load_external_data=False)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["GridSample"] == 0 and ops["Transpose"] == 0


@pytest.mark.parametrize("size", [24, 7, 1])
def test_bicubic_weights_resample_as_grid_sample(size: int) -> None:
    """Weights x table equals grid_sample(bicubic, border, align_corners=False), inside the table,
    on its edges and beyond them (clamped taps)."""
    from edgevlm.export.vision_mha import bicubic_weights

    torch.manual_seed(0)
    table = torch.randn(size, size, 5)  # [y, x, channels]
    points = torch.cat([torch.rand(300, 2) * 2.6 - 1.3, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])])
    weights = bicubic_weights(points[:, 1], size).unsqueeze(2) * bicubic_weights(points[:, 0], size).unsqueeze(1)
    ours = weights.reshape(len(points), -1) @ table.reshape(size * size, -1)
    grid = points.view(1, -1, 1, 2)
    theirs = F.grid_sample(table.permute(2, 0, 1).unsqueeze(0), grid, mode="bicubic", padding_mode="border",
                           align_corners=False)[0, :, :, 0].T
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5)
