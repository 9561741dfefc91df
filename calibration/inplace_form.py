"""An int8 graph's ONNX Runtime CPU form built on the fp32 bundle's own CPU form (export/BUNDLE.md):
`decoder.cpu.onnx` keeps its in-place GroupQueryAttention and `vision.cpu.onnx` its one-block
fused attention, and every linear the Q/DQ graph quantized becomes com.microsoft
DynamicQuantizeMatMul over the Q/DQ graph's int8 weight and scales, as in `cpu_form.py`.

Matching: a float weight of the fp32 form is paired with the Q/DQ graph's int8 weight whose
dequantization lies within half a quantization step of it everywhere (both as [K, N]). That is
what being its quantization means, so the match needs no node or tensor names, which the
quantizer's preprocessing is free to change. Float tensors left over (norms, biases, the kept
patch embedding) are stored inline; the int8 ones are read from the Q/DQ graph's external data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevlm.calibration.cpu_form import CONTRIB
from edgevlm.calibration.graph_edit import drop_unread, replace_node


@dataclass(frozen=True, slots=True)
class Quantized:
    """One int8 linear weight of the Q/DQ graph: its tensors' names and values."""

    weight: str
    scale: str
    zero: str
    values: np.ndarray  # [K, N] int8
    scales: np.ndarray  # [N] float32

    def is_quantization_of(self, float_kn: np.ndarray) -> bool:
        if float_kn.shape != self.values.shape:
            return False
        # the first row alone rejects almost every other weight of this shape, cheaply
        return self._within_half_step(float_kn[:1], self.values[:1]) and \
            self._within_half_step(float_kn, self.values)

    def _within_half_step(self, float_kn: np.ndarray, values: np.ndarray) -> bool:
        # half a step, with room for the float rounding of the quantizer's own division
        error = np.abs(values.astype(np.float32) * self.scales - float_kn)
        return bool(np.all(error <= np.abs(self.scales) * 0.5001 + 1e-12))


def write_inplace_form(fp32_form: Path, qdq: Path, dst: Path) -> dict[str, int]:
    """Write `dst` (beside `qdq`, whose external data it reads); returns counts for the manifest."""
    import onnx
    from onnx import helper

    if qdq.parent.resolve() != dst.parent.resolve():
        raise ValueError("the CPU form must sit beside its Q/DQ graph: it reads the graph's external data")
    qdq_model = onnx.load(str(qdq), load_external_data=False)
    candidates = _quantized_weights(qdq_model, qdq.parent)
    form = onnx.load(str(fp32_form), load_external_data=False)
    inits = {t.name: t for t in form.graph.initializer}
    producer = {out: n for n in form.graph.node for out in n.output}
    used: dict[str, Quantized] = {}
    count = 0
    for node in list(form.graph.node):
        float_kn = _linear_weight(node, _constant(node.input[1], inits, producer, fp32_form.parent)) \
            if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
        match = None if float_kn is None else next((q for q in candidates if q.is_quantization_of(float_kn)), None)
        if match is None:
            continue
        bias = [node.input[2]] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else []
        replace_node(form.graph, node, [helper.make_node(
            "DynamicQuantizeMatMul", [node.input[0], match.weight, match.scale, match.zero, *bias],
            list(node.output), name=node.name, domain=CONTRIB)])
        used[match.weight] = match
        count += 1
    if count != len(candidates):
        raise RuntimeError(f"{fp32_form.name}: {count} of the Q/DQ graph's {len(candidates)} int8 linears matched")
    _drop_dead_nodes(form.graph)
    drop_unread(form.graph)
    _inline_float_tensors(form.graph, fp32_form.parent)
    qdq_inits = {t.name: t for t in qdq_model.graph.initializer}
    for q in used.values():
        form.graph.initializer.extend([qdq_inits[q.weight], qdq_inits[q.scale], qdq_inits[q.zero]])
    if not any(o.domain == CONTRIB for o in form.opset_import):
        form.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    onnx.save(form, str(dst))
    return {"linears_to_dynamic": count}


def _quantized_weights(model: Any, folder: Path) -> list[Quantized]:
    """Every MatMul(x, DequantizeLinear(int8 initializer W [K, N], scale [N], zero)) weight."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    found = []
    for node in model.graph.node:
        dq = producer.get(node.input[1]) if node.op_type == "MatMul" else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        values = numpy_helper.to_array(inits[dq.input[0]], base_dir=str(folder))
        scales = numpy_helper.to_array(inits[dq.input[1]], base_dir=str(folder)).astype(np.float32)
        found.append(Quantized(dq.input[0], dq.input[1], dq.input[2], values, scales))
    return found


def _constant(name: str, inits: dict[str, Any], producer: dict[str, Any], folder: Path) -> np.ndarray | None:
    """An initializer's value, or Reshape(initializer, constant shape)'s (the exporter views conv
    kernels as matrices that way); None for anything computed at run time."""
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name], base_dir=str(folder))
    node = producer.get(name)
    if node is None or node.op_type != "Reshape" or node.input[0] not in inits or node.input[1] not in inits:
        return None
    value = numpy_helper.to_array(inits[node.input[0]], base_dir=str(folder))
    shape = [value.shape[i] if d == 0 else int(d) for i, d in enumerate(numpy_helper.to_array(inits[node.input[1]]))]
    return value.reshape(shape)


def _linear_weight(node: Any, weight: np.ndarray | None) -> np.ndarray | None:
    """The [K, N] float weight of MatMul(x, W) or Gemm(x, W[, b]) (transB=1, a linear), else None."""
    from onnx import helper

    if weight is None or weight.ndim != 2:
        return None
    if node.op_type == "MatMul":
        return weight
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return None
    return weight.T if attrs.get("transB", 0) else weight


def _drop_dead_nodes(graph: Any) -> None:
    """Nodes whose outputs nothing reads any more (the Reshapes of replaced weights)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def _inline_float_tensors(graph: Any, folder: Path) -> None:
    """The fp32 form's remaining tensors (small: norms, biases, kept linears) move into the graph
    file: their data file is the fp32 bundle's, not this bundle's."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor

    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
