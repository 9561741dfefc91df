import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgevlm.calibration.weight_only import drop_input_qdq


def test_the_input_pair_goes_and_the_weight_stays_int8() -> None:
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(8, 4), dtype=np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.5, np.float32), "x_scale"),  # coarse: the pair would be visible
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
        numpy_helper.from_array(weight, "w_q"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="dq"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="w_dq", axis=1),
        helper.make_node("MatMul", ["x_dq", "w"], ["y"], name="head"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert drop_input_qdq(model, ["head"]) == 1
    assert [n.name for n in model.graph.node] == ["w_dq", "head"]
    assert {i.name for i in model.graph.initializer} == {"w_q", "w_scale"}
    x = rng.normal(size=(2, 8)).astype(np.float32)
    options = ort.SessionOptions()  # unoptimised: ORT may fuse DQ + MatMul into an integer kernel
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ (weight.astype(np.float32) * 0.01), rtol=1e-5, atol=1e-6)
