import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgevlm.calibration.policy import linear_nodes, plan


def tiny_graph() -> onnx.ModelProto:
    """pixels -> patch linear -> linear -> attention-style MatMul (two activations) -> head Gemm."""
    weights = {name: numpy_helper.from_array(np.ones(shape, np.float32), name)
               for name, shape in (("w_patch", (8, 8)), ("w_mid", (8, 8)), ("w_head", (4, 8)))}
    nodes = [
        helper.make_node("MatMul", ["x", "w_patch"], ["a"], name="patch"),
        helper.make_node("MatMul", ["a", "w_mid"], ["b"], name="mid"),
        helper.make_node("Transpose", ["b"], ["bt"], name="t"),
        helper.make_node("MatMul", ["b", "bt"], ["scores"], name="scores"),
        helper.make_node("MatMul", ["scores", "b"], ["c"], name="mix"),
        helper.make_node("Gemm", ["c", "w_head"], ["y"], name="head", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], list(weights.values()),
    )
    return helper.make_model(graph)


def test_only_linears_with_constant_weights_are_candidates() -> None:
    nodes = linear_nodes(tiny_graph())
    assert [(n.name, n.part) for n in nodes] == [("patch", "patch_embed"), ("mid", "linear"), ("head", "linear")]


def test_decoder_plan_keeps_the_lm_head_float() -> None:
    decoder = plan("decoder", tiny_graph(), keep=("lm_head",))
    assert decoder.quantize == ("patch", "mid")
    assert decoder.kept == {"lm_head": ("head",)}


def test_vision_plan_keeps_the_patch_embedding_float() -> None:
    vision = plan("vision", tiny_graph())
    assert vision.quantize == ("mid", "head")
    assert vision.kept == {"patch_embed": ("patch",)}
    assert vision.as_manifest() == {"quantized_linears": 2, "kept_float": {"patch_embed": ["patch"]}, "weight_only": {}}


def test_decoder_plan_makes_the_lm_head_weight_only() -> None:
    decoder = plan("decoder", tiny_graph())
    assert decoder.quantize == ("patch", "mid", "head")  # quantized, then its input Q/DQ removed
    assert decoder.kept == {} and decoder.weight_only == {"lm_head": ("head",)}
    assert decoder.weight_only_nodes == ("head",)
