"""Weight-only int8 for chosen linears of a Q/DQ graph: their input's QuantizeLinear /
DequantizeLinear pair is removed, so the activation stays float and only the weight is int8.

Rule: a linear whose input resolution decides the answer keeps a float input. The lm_head is one:
per-tensor int8 on its input flipped greedy choices between close tokens (calibration/README.md),
while an int8 weight per output channel does not. TensorRT takes this form (DQ on the weight only)
as weight-only quantization.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgevlm.calibration.graph_edit import drop_unread, float_source


def drop_input_qdq(model, node_names: Iterable[str]) -> int:
    """Reconnect each named node's input 0 to the float tensor in front of its Q/DQ pair, removing
    the pair where nothing else reads it. Returns how many inputs were reconnected."""
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    names = set(node_names)
    done = 0
    for node in graph.node:
        source = float_source(node.input[0], producer) if node.name in names else node.input[0]
        if source != node.input[0]:
            node.input[0] = source
            done += 1
    drop_unread(graph)
    return done
