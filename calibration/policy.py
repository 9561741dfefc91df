"""Which nodes of a graph get quantized, and which parts keep full precision and why.

Only linear layers are quantized: MatMul/Gemm nodes whose weight is a constant. Everything else
stays float by construction: the attention score and value products (both operands are
activations; the probabilities need more than int8's resolution), softmax, RMSNorm/LayerNorm,
rotary, GridSample. Among the linears, two named parts are treated apart by default, because
measuring them quantized cost accuracy (calibration/README.md):

- `patch_embed` (vision) stays float: the first linear, fed raw pixels; its error reaches every
  image token.
- `lm_head` (decoder) is weight-only: int8 weights per output channel, float input. Per-tensor
  int8 on its input flipped greedy choices between close tokens; the int8 weight does not, and
  at vocabularies of 150 k it is the largest single weight (a quarter of a 0.5 B model).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

LINEAR_OPS: tuple[str, ...] = ("MatMul", "Gemm")
ALWAYS_FLOAT: tuple[str, ...] = (
    "attention score/value MatMuls (activation x activation)", "Softmax", "RMSNorm/LayerNorm",
    "rotary embedding", "GridSample (vision position table)",
)
DEFAULT_KEEP: dict[str, tuple[str, ...]] = {"vision": ("patch_embed",)}
DEFAULT_WEIGHT_ONLY: dict[str, tuple[str, ...]] = {"decoder": ("lm_head",)}


@dataclass(frozen=True, slots=True)
class LinearNode:
    name: str
    op_type: str
    weight: str
    part: str  # "patch_embed", "lm_head" or "linear"


@dataclass(frozen=True, slots=True)
class QuantPlan:
    """One graph's choice: the node names to quantize (weight-only ones included), the kept
    parts and the weight-only parts, each with their nodes."""

    graph: str
    quantize: tuple[str, ...]
    kept: dict[str, tuple[str, ...]]
    weight_only: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def weight_only_nodes(self) -> tuple[str, ...]:
        return tuple(n for names in self.weight_only.values() for n in names)

    def as_manifest(self) -> dict[str, object]:
        return {"quantized_linears": len(self.quantize), "kept_float": {k: list(v) for k, v in self.kept.items()},
                "weight_only": {k: list(v) for k, v in self.weight_only.items()}}


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


def plan(graph: str, model, keep: Iterable[str] | None = None, weight_only: Iterable[str] | None = None) -> QuantPlan:
    """Quantize every linear except the parts in `keep` (default: DEFAULT_KEEP[graph]); the parts
    in `weight_only` (default: DEFAULT_WEIGHT_ONLY[graph]) get int8 weights and a float input."""
    keep = set(DEFAULT_KEEP.get(graph, ()) if keep is None else keep)
    light = set(DEFAULT_WEIGHT_ONLY.get(graph, ()) if weight_only is None else weight_only) - keep
    nodes = linear_nodes(model)
    if graph == "decoder" and nodes:
        last = nodes[-1]
        nodes[-1] = LinearNode(last.name, last.op_type, last.weight, "lm_head")
    quantize = tuple(n.name for n in nodes if n.part not in keep)

    def by_part(parts: set[str]) -> dict[str, tuple[str, ...]]:
        named = {part: tuple(n.name for n in nodes if n.part == part) for part in sorted(parts)}
        return {k: v for k, v in named.items() if v}

    return QuantPlan(graph, quantize, by_part(keep), by_part(light))


def lm_head_node(model) -> str | None:
    """The decoder's lm_head: its last linear with a constant weight."""
    nodes = linear_nodes(model)
    return nodes[-1].name if nodes else None


def _constant_names(model) -> set[str]:
    names = {init.name for init in model.graph.initializer}
    names |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return names

