"""The TensorRT form of explicit quantization, checked on a graph: every QuantizeLinear /
DequantizeLinear is int8 with zero point 0, weight scales are per output channel (1-D),
activation scales per tensor (scalar)."""

from __future__ import annotations

import numpy as np

QDQ_OPS: tuple[str, ...] = ("QuantizeLinear", "DequantizeLinear")
INT8 = 3  # onnx.TensorProto.INT8


def qdq_problems(model) -> list[str]:
    """One line per node that breaks the form; empty when the graph is TensorRT-compatible."""
    inits = {init.name: init for init in model.graph.initializer}
    problems: list[str] = []
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            problems += [f"{node.name}: {p}" for p in _node_problems(node, inits)]
    return problems


def _node_problems(node, inits: dict) -> list[str]:
    from onnx import numpy_helper

    problems = []
    zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zero is None:
        # Without a zero point, Q outputs uint8 and DQ takes its input's type.
        weight = inits.get(node.input[0])
        if node.op_type == "QuantizeLinear" or weight is None or weight.data_type != INT8:
            problems.append("no int8 zero point")
    elif zero.data_type != INT8:
        problems.append(f"zero point type {zero.data_type}, not int8 ({INT8})")
    elif np.any(numpy_helper.to_array(zero) != 0):
        problems.append("non-zero zero point")
    scale = inits.get(node.input[1])
    is_weight = node.input[0] in inits
    if scale is None:
        problems.append("scale is not a constant")
    elif is_weight and len(scale.dims) != 1:
        problems.append("weight scale is not per channel")
    elif not is_weight and len(scale.dims) != 0:
        problems.append("activation scale is not per tensor")
    return problems


def count_qdq(model) -> dict[str, int]:
    return {op: sum(1 for n in model.graph.node if n.op_type == op) for op in QDQ_OPS}
