"""Activation-aware weight scaling (AWQ, Lin et al. 2023) before 4-bit rounding, offline in numpy.

Rule: a linear layer's output is x @ W = (x / s) @ (diag(s) W) for any per-input-channel s > 0.
Scaling up the rows of W that meet large activations gives them finer 4-bit steps; the inverse
scale moves onto the activation. Per group of MatMuls sharing one input (q/k/v; gate/up), s is
mean|x|^alpha, with alpha picked from a grid by the output error of the rounded weights on the
recorded calibration activations (alpha = 0 is plain round-to-nearest, so the search never does
worse than it on that data). 1/s is folded into the producing RMSNorm weight when that Mul feeds
only this group, else applied by a new Mul node.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevlm.calibration.recorder import Feed

ALPHAS = np.linspace(0.0, 1.0, 11)
MAX_ROWS = 2048  # activation rows kept per group for the error search
SEED = 0


@dataclass(frozen=True, slots=True)
class Group:
    """MatMuls that read the same activation tensor; they share one scale vector."""

    tensor: str
    nodes: tuple[str, ...]  # node names (the graph's node list is rebuilt as Muls go in)
    weights: tuple[str, ...]


def apply_awq(model, feeds: Sequence[Feed], block_size: int, exclude: Sequence[str] = ()):
    """Scale `model` (onnx ModelProto, weights loaded) in place and return it."""
    groups = find_groups(model, set(exclude))
    activations = record_inputs(model, feeds, [g.tensor for g in groups])
    inits = {init.name: init for init in model.graph.initializer}
    for group in groups:
        x = activations[group.tensor]
        weights = [_array(inits[w]) for w in group.weights]
        scale = search_scale(x, weights, block_size)
        _apply(model, group, scale, inits)
    return model


def find_groups(model, exclude: set[str]) -> list[Group]:
    """Float MatMuls with a 2-D initializer weight used by no other node, grouped by input."""
    inits = {init.name: init for init in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    by_input: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.name in exclude or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        if len(weight.dims) == 2 and weight.data_type == 1 and uses[node.input[1]] == 1:
            by_input.setdefault(node.input[0], []).append(node)
    return [Group(t, tuple(n.name for n in nodes), tuple(n.input[1] for n in nodes)) for t, nodes in by_input.items()]


def record_inputs(model, feeds: Sequence[Feed], tensors: list[str]) -> dict[str, np.ndarray]:
    """Up to MAX_ROWS rows of each tensor over the feeds. # -> {name: [rows, K]}"""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in tensors if t not in known)
    rows: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    with tempfile.TemporaryDirectory(prefix="edgevlm-awq-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, str(path), save_as_external_data=True, location="probe.onnx.data")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for feed in feeds:
            for name, value in zip(tensors, session.run(tensors, feed), strict=True):
                rows[name].append(value.reshape(-1, value.shape[-1]))
    rng = np.random.default_rng(SEED)
    out = {}
    for name, parts in rows.items():
        x = np.concatenate(parts).astype(np.float32)
        out[name] = x if len(x) <= MAX_ROWS else x[rng.choice(len(x), MAX_ROWS, replace=False)]
    return out


def search_scale(x: np.ndarray, weights: Sequence[np.ndarray], block_size: int) -> np.ndarray:
    """The per-input-channel scale with the least output error after rounding. # x: [rows, K] -> [K]"""
    magnitude = np.maximum(np.abs(x).mean(axis=0), 1e-8)
    reference = [x @ w for w in weights]
    best, best_error = np.ones_like(magnitude), np.inf
    for alpha in ALPHAS:
        scale = magnitude**alpha
        scale = scale / np.sqrt(scale.max() * scale.min())  # centred around 1: keeps weights in range
        error = sum(float(np.mean(((x / scale) @ rtn_dequant(w * scale[:, None], block_size) - ref) ** 2))
                    for w, ref in zip(weights, reference, strict=True))
        if error < best_error:
            best, best_error = scale, error
    return best.astype(np.float32)


def rtn_dequant(w: np.ndarray, block_size: int, bits: int = 4) -> np.ndarray:
    """Asymmetric round-to-nearest in blocks along the input dimension, as MatMulNBits stores it,
    then back to float. # w: [K, N] -> [K, N]"""
    k, n = w.shape
    pad = (-k) % block_size
    blocks = np.pad(w, ((0, pad), (0, 0))).reshape(-1, block_size, n)
    top = 2**bits - 1
    low = np.minimum(blocks.min(axis=1, keepdims=True), 0.0)
    high = np.maximum(blocks.max(axis=1, keepdims=True), 0.0)
    step = np.where(high > low, (high - low) / top, 1.0)
    zero = np.clip(np.round(-low / step), 0, top)
    q = np.clip(np.round(blocks / step) + zero, 0, top)
    return ((q - zero) * step).reshape(-1, n)[:k]


def _array(init) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def _apply(model, group: Group, scale: np.ndarray, inits: dict) -> None:
    from onnx import helper, numpy_helper

    for name in group.weights:
        inits[name].CopyFrom(numpy_helper.from_array(_array(inits[name]) * scale[:, None], name))
    norm = _foldable_norm(model, group, inits)
    if norm is not None:
        inits[norm].CopyFrom(numpy_helper.from_array((_array(inits[norm]) / scale).astype(np.float32), norm))
        return
    inverse = f"{group.tensor}_awq_inverse_scale"
    scaled = f"{group.tensor}_awq_scaled"
    model.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse))
    nodes = list(model.graph.node)
    members = [i for i, n in enumerate(nodes) if n.name in group.nodes]
    for i in members:
        nodes[i].input[0] = scaled
    position = min(members)
    # Nodes stay in topological order: the Mul goes right before the group's first MatMul.
    nodes.insert(position, helper.make_node("Mul", [group.tensor, inverse], [scaled], name=f"{group.tensor}_awq_mul"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _foldable_norm(model, group: Group, inits: dict) -> str | None:
    """The 1-D weight of the Mul producing the group's input, when that Mul feeds only the group
    and the weight is used nowhere else."""
    consumers = [n for n in model.graph.node if group.tensor in n.input]
    if len(consumers) != len(group.nodes):
        return None
    producer = next((n for n in model.graph.node if group.tensor in n.output), None)
    if producer is None or producer.op_type != "Mul":
        return None
    weight = next((i for i in producer.input if i in inits and len(inits[i].dims) == 1), None)
    if weight is None or sum(weight in n.input for n in model.graph.node) != 1:
        return None
    return weight
