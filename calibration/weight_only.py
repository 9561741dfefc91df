"""Weight-only int8 for chosen linears of a Q/DQ graph: their input's QuantizeLinear /
DequantizeLinear pair is removed, so the activation stays float and only the weight is int8.

Rule: a linear whose input resolution decides the answer keeps a float input. The lm_head is one:
per-tensor int8 on its input flipped greedy choices between close tokens (calibration/README.md),
while an int8 weight per output channel does not. TensorRT takes this form (DQ on the weight only)
as weight-only quantization.
"""

from __future__ import annotations

from collections.abc import Iterable


def drop_input_qdq(model, node_names: Iterable[str]) -> int:
    """Reconnect each named node's input 0 to the float tensor in front of its Q/DQ pair, removing
    the pair where nothing else reads it. Returns how many inputs were reconnected."""
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    names = set(node_names)
    done = 0
    for node in graph.node:
        if node.name not in names:
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        node.input[0] = q.input[0]
        done += 1
    _remove_unread(graph, ("DequantizeLinear", "QuantizeLinear"))
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)  # the removed pairs' scales and zero points
    return done


def _remove_unread(graph, op_types: tuple[str, ...]) -> None:
    """Drop nodes of `op_types` whose outputs nothing reads (DQs first, then the Qs they freed)."""
    outputs = {o.name for o in graph.output}
    for op_type in op_types:
        read = {i for n in graph.node for i in n.input} | outputs
        for node in [n for n in graph.node if n.op_type == op_type and not any(o in read for o in n.output)]:
            graph.node.remove(node)
