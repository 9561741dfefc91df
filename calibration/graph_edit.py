"""Small in-place edits of ONNX graphs shared by the quantizers (gemm_to_matmul, weight_only,
cpu_form): swap a node for others at its place, find the float tensor behind a Q/DQ pair, and
prune the Q/DQ nodes and initializers nothing reads any more."""

from __future__ import annotations

from collections.abc import Sequence


def replace_node(graph, old, new: Sequence) -> None:
    """`new` nodes where `old` was (node order stays topological)."""
    index = list(graph.node).index(old)
    graph.node.remove(old)
    for offset, node in enumerate(new):
        graph.node.insert(index + offset, node)


def float_source(name: str, producer: dict) -> str:
    """The float tensor behind DQ(Q(x)) -> x; any other tensor is itself."""
    dq = producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return name
    q = producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else name


def drop_unread(graph) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads (DQs first, then the Qs they freed), then
    the initializers nothing reads (their scales and zero points)."""
    outputs = {o.name for o in graph.output}
    for op_type in ("DequantizeLinear", "QuantizeLinear"):
        read = {i for n in graph.node for i in n.input} | outputs
        for node in [n for n in graph.node if n.op_type == op_type and not any(o in read for o in n.output)]:
            graph.node.remove(node)
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)
