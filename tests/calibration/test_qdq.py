"""The int8 bundle's graphs are in TensorRT's explicit-quantization form."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from edgevlm.calibration.qdq_check import qdq_problems

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("graph", ["vision.onnx", "decoder.onnx"])
def test_every_quantize_and_dequantize_is_int8_with_zero_point_0(int8_bundle: Path, graph: str) -> None:
    model = onnx.load(str(int8_bundle / graph))
    inits = {init.name: init for init in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(nodes) > 10
    for node in nodes:
        zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is None:  # no zero point: only a DQ of an int8 weight may omit it
            assert node.op_type == "DequantizeLinear" and inits[node.input[0]].data_type == TensorProto.INT8
            continue
        assert zero.data_type == TensorProto.INT8, node.name
        assert not np.any(numpy_helper.to_array(zero)), node.name
    assert qdq_problems(model) == []


def test_weights_per_channel_and_activations_per_tensor(int8_bundle: Path) -> None:
    model = onnx.load(str(int8_bundle / "decoder.onnx"))
    inits = {init.name: init for init in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    weights = [n for n in dq if n.input[0] in inits]
    activations = [n for n in dq if n.input[0] not in inits]
    assert weights and activations
    assert all(inits[n.input[0]].data_type == TensorProto.INT8 for n in weights)
    assert all(len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1 for n in weights)
    assert all(len(inits[n.input[1]].dims) == 0 for n in activations)


def test_no_integer_bias_and_no_contrib_ops(int8_bundle: Path) -> None:
    """TensorRT takes int8 Q/DQ only: biases stay float and nothing is in the com.microsoft domain."""
    for graph in ("vision.onnx", "decoder.onnx"):
        model = onnx.load(str(int8_bundle / graph))
        assert all(init.data_type != TensorProto.INT32 for init in model.graph.initializer)
        assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)


def test_the_lm_head_is_weight_only_and_the_patch_embedding_float(int8_bundle: Path) -> None:
    import json

    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    graphs = manifest["quantization"]["graphs"]
    model = onnx.load(str(int8_bundle / "decoder.onnx"))
    inits = {init.name: init for init in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    (lm_head,) = graphs["decoder"]["weight_only"]["lm_head"]
    node = next(n for n in model.graph.node if n.name == lm_head)
    weight = producer[node.input[1]]
    assert node.op_type == "MatMul" and weight.op_type == "DequantizeLinear"
    assert inits[weight.input[0]].data_type == TensorProto.INT8
    assert node.input[0] not in producer or producer[node.input[0]].op_type != "DequantizeLinear", \
        "the lm_head input must stay float"
    vision = onnx.load(str(int8_bundle / "vision.onnx"))
    (patch,) = graphs["vision"]["kept_float"]["patch_embed"]
    vision_inits = {init.name for init in vision.graph.initializer}
    assert next(n for n in vision.graph.node if n.name == patch).input[1] in vision_inits


def test_weights_use_the_reduced_range(int8_bundle: Path) -> None:
    """|q| <= 64: ONNX Runtime's AVX2 uint8 x int8 kernels cannot saturate (int8.py)."""
    for graph in ("vision.onnx", "decoder.onnx"):
        model = onnx.load(str(int8_bundle / graph))
        weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == TensorProto.INT8
                   and len(i.dims) == 2]
        assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
