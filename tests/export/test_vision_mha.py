"""vision.cpu.onnx, the vision tower's CPU form (one attention block per call, fused unmasked
attention, fused rotary): its nodes and inputs. Its outputs against HF, block by block, are tested with the
portable graph's in test_onnx_graphs.py."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import onnx


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
