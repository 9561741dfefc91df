"""The ONNX Runtime CPU form of a TensorRT-form int8 graph, written beside it (`<graph>.cpu.onnx`).

The bundle's int8 graphs are in TensorRT's form: int8 activations with zero point 0, static
per-tensor scales. On x86, ONNX Runtime fuses Q/DQ into integer kernels only for uint8
activations; with int8 activations every weight's DequantizeLinear runs at each step and the
graph is slower than fp32 (measured 5.7x on the 0.5 B bench model). The CPU form is ONNX
Runtime's own dynamic-quantization form over the same int8 weights:

- every linear with an int8 weight, MatMul(x, DQ(W [K, N], per-column scale)), becomes
  com.microsoft DynamicQuantizeMatMul(x, W, scale, zero): its float input is quantized to uint8
  per call, then one uint8 x int8 GEMM;
- every remaining activation QuantizeLinear -> DequantizeLinear pair is removed (between
  linears the activations stay float).

Rule: on a CPU the static pairs buy nothing (no kernel consumes int8 between linears) and cost two
elementwise passes each; removing them measured 93 vs 126 ms per decode step at batch 16 and
23.5 vs 28.9 ms at batch 1 against uint8-relabelled static Q/DQ on the bench model. Weights are
not copied: the CPU form's tensors point into the TensorRT form's external data, so it costs only
its graph file on disk. Weights must lie in [-64, 64] (int8.py: AVX2's uint8 x int8 products
saturate in int16 otherwise).
"""

from __future__ import annotations

from pathlib import Path

from edgevlm.calibration.graph_edit import drop_unread, float_source, replace_node

CONTRIB = "com.microsoft"


def write_cpu_form(src: Path, dst: Path) -> dict[str, int]:
    """Write the CPU form of `src` to `dst` (same folder: it shares `src`'s external data).
    Returns counts of what changed, for the manifest."""
    import onnx
    from onnx import helper

    if src.parent.resolve() != dst.parent.resolve():
        raise ValueError("the CPU form must sit beside its graph: it reads the graph's external data")
    model = onnx.load(str(src), load_external_data=False)
    counts = {"linears_to_dynamic": dynamic_linears(model.graph),
              "activation_pairs_removed": remove_activation_pairs(model.graph)}
    if counts["linears_to_dynamic"] and not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    drop_unread(model.graph)
    onnx.save(model, str(dst))
    return counts


def dynamic_linears(graph) -> int:
    """MatMul(x, DQ(int8 W [K, N], per column)) -> DynamicQuantizeMatMul(float x, W, scale, zero),
    taking x from in front of its Q/DQ pair when it has one."""
    from onnx import helper

    inits = {i.name for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    count = 0
    for node in list(graph.node):
        weight = producer.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or weight.op_type != "DequantizeLinear" or weight.input[0] not in inits:
            continue
        if _axis(weight) not in (1, -1):
            raise ValueError(f"{node.name}: weight scales are not per output column (axis {_axis(weight)})")
        inputs = [float_source(node.input[0], producer), *weight.input]
        replace_node(graph, node, [helper.make_node("DynamicQuantizeMatMul", inputs, list(node.output),
                                                    name=node.name, domain=CONTRIB)])
        count += 1
    return count


def remove_activation_pairs(graph) -> int:
    """Readers of DQ(Q(x)) read x instead (a graph output keeps its name through an Identity);
    returns the pairs bypassed."""
    from onnx import helper

    inits = {i.name for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    outputs = {o.name for o in graph.output}
    bypass = {}
    kept_outputs = 0
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or node.input[0] in inits:
            continue
        source = float_source(node.output[0], producer)
        if source == node.output[0]:
            continue
        if node.output[0] in outputs:
            replace_node(graph, node, [helper.make_node("Identity", [source], list(node.output), name=node.name)])
            kept_outputs += 1
        else:
            bypass[node.output[0]] = source
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = bypass.get(name, name)
    return len(bypass) + kept_outputs


def _axis(node) -> int:
    """DequantizeLinear's channel axis (default 1)."""
    return next((a.i for a in node.attribute if a.name == "axis"), 1)
