from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevlm.calibration.gemm_to_matmul import gemms_as_matmul, gemms_as_matmul_loaded


def _gemm_graph(bias: bool) -> onnx.ModelProto:
    """x -> Gemm(W1 [6, 8], transB) -> Gemm(W2 [5, 6], transB) -> y"""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(5, 6)).astype(np.float32), "w2")]
    second = ["h", "w2"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "b2"))
        second.append("b2")
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="g1", transB=1),
             helper.make_node("Gemm", second, ["y"], name="g2", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model_or_path, x: np.ndarray) -> np.ndarray:
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("bias", [False, True])
def test_gemms_become_matmuls_over_transposed_weights(tmp_path: Path, bias: bool) -> None:
    model = _gemm_graph(bias)
    x = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    expected = _run(model, x)
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path), save_as_external_data=True, size_threshold=0, location="g.onnx.data")
    assert gemms_as_matmul(path, ["g1", "g2"]) == 2
    written = onnx.load(str(path), load_external_data=False)
    assert [n.op_type for n in written.graph.node] == ["MatMul", "MatMul"] + (["Add"] if bias else [])
    dims = {i.name: list(i.dims) for i in written.graph.initializer}
    assert dims["w1.kn"] == [8, 6] and dims["w2.kn"] == [6, 5]
    assert (tmp_path / "g.onnx.matmul.data").stat().st_size == (8 * 6 + 6 * 5) * 4
    np.testing.assert_allclose(_run(path, x), expected, rtol=1e-5, atol=1e-5)

    loaded = _gemm_graph(bias)
    assert gemms_as_matmul_loaded(loaded, ["g2"]) == 1
    assert [n.op_type for n in loaded.graph.node][:2] == ["Gemm", "MatMul"]
    np.testing.assert_allclose(_run(loaded, x), expected, rtol=1e-5, atol=1e-5)


def test_matmuls_and_unnamed_nodes_are_left_alone() -> None:
    model = _gemm_graph(False)
    assert gemms_as_matmul_loaded(model, ["g1"]) == 1
    assert gemms_as_matmul_loaded(model, ["g1", "nope"]) == 0
