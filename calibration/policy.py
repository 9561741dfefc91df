"""Which nodes of a graph get quantized, and which parts keep full precision and why.

Only linear layers are quantized: MatMul/Gemm nodes whose weight is a constant. Everything else
stays float by construction: the attention score and value products (both operands are
activations; the probabilities need more than int8's resolution), softmax, RMSNorm/LayerNorm,
rotary, GridSample. Among the linears, two named parts stay float by default, because measuring
them quantized cost accuracy (calibration/README.md):

- `patch_embed` (vision): the first linear, fed raw pixels; its error reaches every image token.
- `lm_head` (decoder): the last linear, producing logits; int8 rounding there flips greedy
  choices between close tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LINEAR_OPS: tuple[str, ...] = ("MatMul", "Gemm")
ALWAYS_FLOAT: tuple[str, ...] = (
    "attention score/value MatMuls (activation x activation)", "Softmax", "RMSNorm/LayerNorm",
    "rotary embedding", "GridSample (vision position table)",
)
DEFAULT_KEEP: dict[str, tuple[str, ...]] = {"vision": ("patch_embed",), "decoder": ("lm_head",)}


@dataclass(frozen=True, slots=True)
class LinearNode:
    name: str
    op_type: str
    weight: str
    part: str  # "patch_embed", "lm_head" or "linear"


@dataclass(frozen=True, slots=True)
class QuantPlan:
    """One graph's choice: the node names to quantize and the kept parts with their nodes."""

    graph: str
    quantize: tuple[str, ...]
    kept: dict[str, tuple[str, ...]]

    def as_manifest(self) -> dict[str, object]:
        return {"quantized_linears": len(self.quantize), "kept_float": {k: list(v) for k, v in self.kept.items()}}


def linear_nodes(model, graph_inputs: Iterable[str] | None = None) -> list[LinearNode]:
    """Linear layers in node order (the exporter writes nodes topologically), each with its part:
    one fed by a graph input is `patch_embed`. Weights the exporter reshapes at run time (conv
    kernels viewed as matrices) count only once constant folding (`prepare.py`) made them
    initializers."""
    constants = _constant_names(model)
    inputs = set(graph_inputs if graph_inputs is not None else (i.name for i in model.graph.input))
    found: list[LinearNode] = []
    for node in model.graph.node:
        if node.op_type not in LINEAR_OPS or len(node.input) < 2:
            continue
        weight = node.input[1]
        if weight not in constants:
            continue
        part = "patch_embed" if node.input[0] in inputs else "linear"
        found.append(LinearNode(node.name, node.op_type, weight, part))
    return found


def plan(graph: str, model, keep: Iterable[str] | None = None) -> QuantPlan:
    """Quantize every linear except the parts in `keep` (default: DEFAULT_KEEP[graph])."""
    keep = set(DEFAULT_KEEP.get(graph, ()) if keep is None else keep)
    nodes = linear_nodes(model)
    if graph == "decoder" and nodes:
        last = nodes[-1]
        nodes[-1] = LinearNode(last.name, last.op_type, last.weight, "lm_head")
    quantize = tuple(n.name for n in nodes if n.part not in keep)
    kept = {part: tuple(n.name for n in nodes if n.part == part) for part in sorted(keep)}
    return QuantPlan(graph, quantize, {k: v for k, v in kept.items() if v})


def _constant_names(model) -> set[str]:
    names = {init.name for init in model.graph.initializer}
    names |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return names

