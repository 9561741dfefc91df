"""vision.cpu.onnx, the vision tower's CPU form (one attention block per call, fused unmasked
attention), in a real ONNX Runtime session against HF, over the portable graph's test grids."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgevlm.runtime.vision_inputs import attention_blocks, vision_inputs

# Video frames (t > 1) are compared with vision.onnx in tests/runtime/test_onnxruntime_backend.py:
# HF's own position embedding indexes image_shapes per frame and fails on them.
GRIDS = [[[1, 2, 2]], [[1, 8, 14]], [[1, 20, 12], [1, 4, 4], [1, 6, 10]]]


@pytest.fixture(scope="module")
def cpu_session(bundle_dir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(bundle_dir / "vision.cpu.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("grid", GRIDS, ids=["1-token", "non-square", "three-images"])
def test_block_by_block_equals_hf(cpu_session: ort.InferenceSession, hf_model: Any, grid: list) -> None:
    thw = np.array(grid)
    pixels = np.random.default_rng(1).standard_normal((int(thw.prod(1).sum()), 1176), dtype=np.float32)
    inputs = vision_inputs(thw, 2)
    blocks = attention_blocks(inputs.attention_bias)
    assert len(blocks) == int(thw[:, 0].sum())  # one block per frame of every image
    embeds = np.concatenate([
        cpu_session.run(None, {"pixel_values": pixels[lo:hi], "pos_grid": inputs.pos_grid[lo:hi],
                               "rotary_pos": inputs.rotary_pos[lo:hi]})[0]
        for lo, hi in blocks
    ])
    with torch.no_grad():
        expected = torch.cat(hf_model.model.get_image_features(torch.from_numpy(pixels),
                                                                torch.from_numpy(thw)).pooler_output).numpy()
    np.testing.assert_allclose(embeds, expected, rtol=1e-4, atol=1e-5)


def test_fused_attention_and_no_mask_input(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    model = onnx.load(str(bundle_dir / "vision.cpu.onnx"), load_external_data=False)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["MultiHeadAttention"] == manifest["architecture"]["vision"]["depth"]
    assert ops["Softmax"] == 0
    assert [i.name for i in model.graph.input] == ["pixel_values", "pos_grid", "rotary_pos"]
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"vision.onnx.data"} and not (bundle_dir / "vision.cpu.onnx.data").exists()
    assert manifest["graphs"]["vision"]["cpu_form"]["external_data"] == "vision.onnx.data"
