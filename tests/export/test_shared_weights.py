"""A second graph form reads the first form's external data: twins shared, its own constants inline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevlm.export import shared_weights
from edgevlm.export.shared_weights import share_weights


def _save(path: Path, weights: dict[str, np.ndarray], ops: list[tuple[str, str]]) -> None:
    """x -> op(x, w) for each (op, weight name), chained; weights external."""
    nodes, current = [], "x"
    for i, (op, name) in enumerate(ops):
        nodes.append(helper.make_node(op, [current, name], [f"h{i}"]))
        current = f"h{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
                              [numpy_helper.from_array(a, n) for n, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{path.name}.data", size_threshold=0)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_twins_are_read_from_the_main_data_and_own_tensors_stay_inline(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4, 4), dtype=np.float32)
    own = np.full((4, 4), 0.5, np.float32)
    _save(tmp_path / "main.onnx", {"a": a, "b": b}, [("MatMul", "a"), ("Add", "b")])
    # other names, another order, one tensor of its own: matched by content, not name
    _save(tmp_path / "form.onnx", {"w1": b, "w0": a, "c": own}, [("MatMul", "w0"), ("Add", "w1"), ("Mul", "c")])
    x = rng.standard_normal((4, 4), dtype=np.float32)
    expected = _run(tmp_path / "form.onnx", x)

    result = share_weights(tmp_path / "form.onnx", tmp_path / "main.onnx")

    assert (result.shared, result.own, result.own_bytes) == (2, 1, own.nbytes)
    assert not (tmp_path / "form.onnx.data").exists()
    model = onnx.load(str(tmp_path / "form.onnx"), load_external_data=False)
    locations = {t.name: {e.key: e.value for e in t.external_data}.get("location") for t in model.graph.initializer}
    assert locations == {"w1": "main.onnx.data", "w0": "main.onnx.data", "c": None}
    np.testing.assert_array_equal(_run(tmp_path / "form.onnx", x), expected)


def test_diverged_forms_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    _save(tmp_path / "main.onnx", {"a": rng.standard_normal((4, 4), dtype=np.float32)}, [("MatMul", "a")])
    _save(tmp_path / "form.onnx", {"a": rng.standard_normal((4, 4), dtype=np.float32)}, [("MatMul", "a")])
    monkeypatch.setattr(shared_weights, "MAX_OWN_BYTES", 32)
    with pytest.raises(RuntimeError, match="no twin"):
        share_weights(tmp_path / "form.onnx", tmp_path / "main.onnx")
    assert (tmp_path / "form.onnx.data").exists()  # nothing rewritten


def test_forms_in_other_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="beside"):
        share_weights(tmp_path / "other" / "form.onnx", tmp_path / "main.onnx")
