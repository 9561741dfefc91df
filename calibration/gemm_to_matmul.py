"""Linear layers written as Gemm(x, W [N, K], transB=1) -> MatMul over the [K, N] weight (+ Add for
a bias), before quantizing.

The exporter writes 2-D linears (the vision tower's, the lm_head) as Gemm. Rule: every quantized
linear is a MatMul with a constant [K, N] weight, so one form serves every consumer: quantize_static
quantizes it per output channel on axis 1, MatMulNBits blocks it along K, the CPU form's
DynamicQuantizeMatMul reads B as [K, N], and TensorRT treats MatMul and Gemm alike. The weights are
transposed once here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgevlm.calibration.graph_edit import replace_node


def gemms_as_matmul(path: Path, names: Iterable[str]) -> int:
    """Rewrite the graph file `path` in place: the named Gemm nodes become MatMuls. Only their
    weights are read; the transposed copies go to one new external-data file beside the graph
    (`<graph>.matmul.data`) and the other weights stay where they are. Returns the count."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor, set_external_data

    model = onnx.load(str(path), load_external_data=False)
    data_file = f"{path.name}.matmul.data"
    count = 0
    with (path.parent / data_file).open("wb") as data:
        for node in _gemms(model.graph, names):
            weight = _initializer(model.graph, node.input[1])
            load_external_data_for_tensor(weight, str(path.parent))
            tensor = _replace(model.graph, node, weight)
            offset = data.tell()
            data.write(tensor.raw_data)
            set_external_data(tensor, data_file, offset=offset, length=len(tensor.raw_data))
            tensor.ClearField("raw_data")
            count += 1
    onnx.save(model, str(path))
    return count


def gemms_as_matmul_loaded(model, names: Iterable[str]) -> int:
    """The same rewrite on a model whose weights are loaded (in memory)."""
    nodes = _gemms(model.graph, names)
    for node in nodes:
        _replace(model.graph, node, _initializer(model.graph, node.input[1]))
    return len(nodes)


def _gemms(graph, names: Iterable[str]) -> list:
    wanted = set(names)
    return [n for n in graph.node if n.name in wanted and n.op_type == "Gemm"]


def _initializer(graph, name: str):
    return next(i for i in graph.initializer if i.name == name)


def _replace(graph, node, weight):
    """Swap Gemm `node` for MatMul (+ Add for a bias); returns the new [K, N] weight tensor."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise ValueError(f"{node.name}: only Gemm(x, W[, b]) with transA=0, alpha=beta=1 is a linear")
    array = numpy_helper.to_array(weight)
    if attrs.get("transB", 0):
        array = np.ascontiguousarray(array.T)  # [N, K] -> [K, N]
    tensor = numpy_helper.from_array(array, f"{node.input[1]}.kn")
    graph.initializer.remove(weight)
    graph.initializer.append(tensor)
    has_bias = len(node.input) >= 3 and bool(node.input[2])
    product = f"{node.output[0]}.matmul" if has_bias else node.output[0]
    replacement = [helper.make_node("MatMul", [node.input[0], tensor.name], [product], name=node.name)]
    if has_bias:
        bias = helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}.bias")
        replacement.append(bias)
    replace_node(graph, node, replacement)
    return tensor
