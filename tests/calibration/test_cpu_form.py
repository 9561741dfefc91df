"""The ONNX Runtime CPU form of an int8 graph: linears as DynamicQuantizeMatMul on the same int8
weights, the static activation pairs gone, weights shared with the TensorRT form."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevlm.calibration.cpu_form import write_cpu_form

RNG = np.random.default_rng(0)
WEIGHT = RNG.integers(-64, 65, size=(8, 4), dtype=np.int8)  # the reduced range int8.py writes


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _graph(nodes: list, out_shape: list[int], weight_axis: int = 1) -> onnx.ModelProto:
    """x [3, 8] with its Q/DQ pair (x_dq) and an int8 weight (w: DQ of w_q [8, 4]) available."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
        numpy_helper.from_array(WEIGHT, "w_q"),
        numpy_helper.from_array(np.full(4 if weight_axis == 1 else 8, 0.01, np.float32), "w_scale"),
    ]
    pair = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="dq"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="w_dq", axis=weight_axis),
    ]
    graph = helper.make_graph(pair + nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _cpu_form(tmp_path: Path, model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    onnx.save(model, str(tmp_path / "g.onnx"))
    counts = write_cpu_form(tmp_path / "g.onnx", tmp_path / "g.cpu.onnx")
    return onnx.load(str(tmp_path / "g.cpu.onnx")), counts


@pytest.mark.parametrize("source", ["x_dq", "x"])  # W8A8 and weight-only linears alike
def test_linears_become_dynamic_quantize_matmul_on_the_float_input(tmp_path: Path, source: str) -> None:
    cpu, counts = _cpu_form(tmp_path, _graph([helper.make_node("MatMul", [source, "w"], ["y"], name="mm")], [3, 4]))
    assert counts["linears_to_dynamic"] == 1
    assert [(n.op_type, n.input[0]) for n in cpu.graph.node] == [("DynamicQuantizeMatMul", "x")]
    assert {i.name for i in cpu.graph.initializer} == {"w_q", "w_scale"}  # the pair's scales are gone
    x = RNG.normal(0, 1, (3, 8)).astype(np.float32)
    expected = x @ (WEIGHT.astype(np.float32) * 0.01)
    # the input is quantized per call to 8 bits: the error stays under 1 % of the output's range
    assert np.abs(_run(cpu, x) - expected).max() < 0.01 * np.abs(expected).max()


def test_activation_pairs_between_other_ops_are_removed(tmp_path: Path) -> None:
    cpu, counts = _cpu_form(tmp_path, _graph([helper.make_node("Relu", ["x_dq"], ["y"], name="relu")], [3, 8]))
    assert counts == {"linears_to_dynamic": 0, "activation_pairs_removed": 1}
    assert [(n.op_type, list(n.input)) for n in cpu.graph.node] == [("Relu", ["x"])]
    x = RNG.normal(0, 3, (3, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(cpu, x), np.maximum(x, 0))  # float, no int8 rounding


def test_weight_scales_must_be_per_output_column(tmp_path: Path) -> None:
    model = _graph([helper.make_node("MatMul", ["x_dq", "w"], ["y"], name="mm")], [3, 4], weight_axis=0)
    with pytest.raises(ValueError, match="per output column"):
        _cpu_form(tmp_path, model)


def test_the_cpu_form_must_sit_beside_its_graph(tmp_path: Path) -> None:
    onnx.save(_graph([helper.make_node("Relu", ["x_dq"], ["y"])], [3, 8]), str(tmp_path / "g.onnx"))
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="beside"):
        write_cpu_form(tmp_path / "g.onnx", tmp_path / "other" / "g.cpu.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["vision", "decoder"])
def test_the_bundle_cpu_forms_share_weights_and_run_integer_kernels(int8_bundle: Path, graph: str) -> None:
    import json

    cpu = onnx.load(str(int8_bundle / f"{graph}.cpu.onnx"), load_external_data=False)
    external = {e.value for i in cpu.graph.initializer for e in i.external_data if e.key == "location"}
    assert external == {f"{graph}.onnx.data"}, "the CPU form reads the TensorRT form's weights"
    assert not (int8_bundle / f"{graph}.cpu.onnx.data").exists()
    ops = [n.op_type for n in cpu.graph.node]
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    plan = json.loads((int8_bundle / "manifest.json").read_text())["quantization"]["graphs"][graph]
    assert ops.count("DynamicQuantizeMatMul") == plan["quantized_linears"] == plan["cpu_form"]["linears_to_dynamic"]
    inits = {i.name: i for i in cpu.graph.initializer}
    for node in (n for n in cpu.graph.node if n.op_type == "DynamicQuantizeMatMul"):
        assert inits[node.input[1]].data_type == TensorProto.INT8
    # built on the fp32 bundle's own CPU form (calibration/inplace_form.py): its attention kernel kept
    assert plan["cpu_form"]["built_on"] == f"{graph}.cpu.onnx" and "why" not in plan["cpu_form"]
    assert {"vision": "MultiHeadAttention", "decoder": "GroupQueryAttention"}[graph] in ops


@pytest.mark.slow
def test_the_engine_on_cpu_loads_the_cpu_form(int8_bundle: Path) -> None:
    from edgevlm.runtime.engine import Engine

    engine = Engine.from_bundle(int8_bundle, max_batch=1)
    try:
        assert {g: p.name for g, p in engine.backend.graph_files.items()} == {
            "vision": "vision.cpu.onnx", "decoder": "decoder.cpu.onnx"}
    finally:
        engine.close()


def test_a_graph_output_behind_a_pair_keeps_its_name(tmp_path: Path) -> None:
    model = _graph([], [3, 8])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("x_dq", TensorProto.FLOAT, [3, 8]))
    model.graph.node.remove(next(n for n in model.graph.node if n.name == "w_dq"))
    cpu, counts = _cpu_form(tmp_path, model)
    assert counts["activation_pairs_removed"] == 1
    assert [(n.op_type, list(n.input), list(n.output)) for n in cpu.graph.node] == [("Identity", ["x"], ["x_dq"])]
    x = RNG.normal(0, 3, (3, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(cpu, x), x)
