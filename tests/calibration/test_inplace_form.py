"""The int8 CPU form built on the fp32 bundle's own CPU form: linears matched to their int8 weights
by value (not by name), float leftovers inline, and a weight without its twin refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevlm.calibration.inplace_form import write_inplace_form

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((8, 6)).astype(np.float32)  # MatMul weight [K, N]
W2 = RNG.standard_normal((4, 6)).astype(np.float32)  # Gemm weight [N, K] (transB)
BIAS = RNG.standard_normal(4).astype(np.float32)
NORM = RNG.standard_normal(6).astype(np.float32)


def _quantize(w_kn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = (np.abs(w_kn).max(axis=0) / 64).astype(np.float32)
    return np.clip(np.round(w_kn / scale), -64, 64).astype(np.int8), scale


def _save(model, path: Path) -> None:
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{path.name}.data", size_threshold=0)


def _fp32_form(path: Path) -> None:
    """x [2, 8] -> MatMul(W1) -> Mul(norm) -> Gemm(W2, bias, transB=1) -> y [2, 4]."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="first"),
             helper.make_node("Mul", ["a", "norm"], ["b"]),
             helper.make_node("Gemm", ["b", "w2", "bias"], ["y"], name="second", transB=1)]
    weights = [numpy_helper.from_array(a, n) for n, a in (("w1", W1), ("norm", NORM), ("w2", W2), ("bias", BIAS))]
    graph = helper.make_graph(nodes, "fp32", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], weights)
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def _qdq_graph(path: Path, weights: list[np.ndarray]) -> None:
    """MatMuls over DequantizeLinear(int8 W [K, N]) with other names and in reverse order."""
    nodes, inits = [], []
    for i, w_kn in enumerate(reversed(weights)):
        q, scale = _quantize(w_kn)
        inits += [numpy_helper.from_array(q, f"q{i}"), numpy_helper.from_array(scale, f"s{i}"),
                  numpy_helper.from_array(np.zeros(len(scale), np.int8), f"z{i}")]
        nodes += [helper.make_node("DequantizeLinear", [f"q{i}", f"s{i}", f"z{i}"], [f"w{i}"], axis=1),
                  helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"y{i}"], name=f"renamed{i}")]
    graph = helper.make_graph(nodes, "qdq", [], [], inits)
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_linears_take_their_int8_twins_whatever_their_names(tmp_path: Path) -> None:
    (tmp_path / "fp32").mkdir()
    _fp32_form(tmp_path / "fp32" / "g.cpu.onnx")
    _qdq_graph(tmp_path / "g.onnx", [W1, W2.T])

    counts = write_inplace_form(tmp_path / "fp32" / "g.cpu.onnx", tmp_path / "g.onnx", tmp_path / "g.cpu.onnx")

    assert counts["linears_to_dynamic"] == 2
    model = onnx.load(str(tmp_path / "g.cpu.onnx"), load_external_data=False)
    nodes = {n.name: n for n in model.graph.node}
    assert [n.op_type for n in model.graph.node] == ["DynamicQuantizeMatMul", "Mul", "DynamicQuantizeMatMul"]
    assert nodes["first"].input[1:] == ["q1", "s1", "z1"]  # reversed order in the Q/DQ graph
    assert nodes["second"].input[1:] == ["q0", "s0", "z0", "bias"]
    locations = {t.name: {e.key: e.value for e in t.external_data}.get("location") for t in model.graph.initializer}
    assert locations["q0"] == locations["q1"] == "g.onnx.data"  # int8 read from this bundle's data
    assert locations["norm"] is None and locations["bias"] is None  # float leftovers inline
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "g.cpu.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    expected = ((x @ W1) * NORM) @ W2.T + BIAS
    np.testing.assert_allclose(got, expected, rtol=0.1, atol=0.1 * np.abs(expected).max())


def test_an_int8_weight_without_its_float_twin_is_refused(tmp_path: Path) -> None:
    (tmp_path / "fp32").mkdir()
    _fp32_form(tmp_path / "fp32" / "g.cpu.onnx")
    _qdq_graph(tmp_path / "g.onnx", [W1 + 0.5, W2.T])  # W1's int8 weight is another weight's
    with pytest.raises(RuntimeError, match="1 of the Q/DQ graph's 2 int8 linears matched"):
        write_inplace_form(tmp_path / "fp32" / "g.cpu.onnx", tmp_path / "g.onnx", tmp_path / "g.cpu.onnx")
    assert not (tmp_path / "g.cpu.onnx").exists()
