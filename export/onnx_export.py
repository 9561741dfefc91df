"""A torch module -> one ONNX file with external data, in the three stages the CLI reports.

`trace` (torch.export, non-strict, symbolic dims), `convert` (the dynamo ONNX exporter, no
optimisation yet) and `optimise_and_save` (onnxscript's optimizer: constant folding, which also
pre-transposes Linear weights so MatMul reads them as stored; dead code removal), then the
symbolic dims are given the bundle's names and the file is written with its weights in
`<file>.data` (always external: one loading path for every model size, mmap-friendly, and never
near protobuf's 2 GB limit).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# axes: {value name: {axis: dim name}} for the graph's inputs and outputs
Axes = Mapping[str, Mapping[int, str]]


@dataclass(frozen=True, slots=True)
class GraphStats:
    """What one written graph holds."""

    nodes_before_optimise: int
    nodes: int
    initializer_bytes: int


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's own chatter (known-harmless warnings and log lines), nothing else."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # torch 2.13's pytree still calls its own deprecated LeafSpec check while exporting.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def trace(module: Any, args: tuple[Any, ...], dynamic_shapes: Any) -> Any:
    """torch.export the module with symbolic dims (`torch.export.ExportedProgram`)."""
    import torch

    with quiet_exporter(), torch.no_grad():
        return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)


def convert(program: Any, input_names: Sequence[str], output_names: Sequence[str], opset: int) -> Any:
    """ExportedProgram -> `torch.onnx.ONNXProgram`, inputs and outputs named, not yet optimised."""
    import torch

    with quiet_exporter():
        return torch.onnx.export(
            program,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            optimize=False,
            verbose=False,
        )


def name_dims(model: Any, axes: Axes) -> None:
    """Rename the exporter's symbolic dims (s0, 4*s18 ...) to the bundle's names, everywhere."""
    import onnx_ir as ir

    values = {v.name: v for v in (*model.graph.inputs, *model.graph.outputs)}
    renames: dict[str, str] = {}
    for value_name, by_axis in axes.items():
        shape = values[value_name].shape
        for axis, wanted in by_axis.items():
            current = shape[axis]
            if not isinstance(current, ir.SymbolicDim) or current.value is None:
                raise ValueError(f"{value_name} axis {axis} is not symbolic in the exported graph: {shape}")
            if renames.setdefault(current.value, wanted) != wanted:
                raise ValueError(f"dims {renames[current.value]!r} and {wanted!r} were traced as one ({current})")

    def renamed(dim: Any) -> Any:
        if isinstance(dim, ir.SymbolicDim) and dim.value in renames:
            return ir.SymbolicDim(renames[dim.value])
        return dim

    for value in [*model.graph.inputs, *(out for node in model.graph for out in node.outputs)]:
        if value.shape is not None:
            value.shape = ir.Shape([renamed(dim) for dim in value.shape])


def optimise_and_save(program: Any, axes: Axes, path: Path) -> GraphStats:
    """Optimise the graph, name its dims, write `path` + `path.data`, and check the file."""
    import onnx

    nodes_before = len(program.model.graph)
    traced_weights = list(program.model.graph.initializers.values())
    with quiet_exporter():
        program.optimize()
    name_dims(program.model, axes)
    program.save(path, external_data=True)
    onnx.checker.check_model(str(path))
    weights = list(program.model.graph.initializers.values())
    stats = GraphStats(nodes_before, len(program.model.graph), sum(v.const_value.nbytes for v in weights))
    release_weights([*traced_weights, *weights])
    return stats


def release_weights(values: Sequence[Any]) -> None:
    """Drop the graph's hold on the torch weights once the file is written.

    onnxscript's module-level rewrite rules keep the last nodes they matched, and through them the
    values (also ones the optimiser replaced) and their tensors: without this, a few leaked
    checkpoint tensors keep the checkpoint's whole memory map resident."""
    for value in values:
        value.const_value = None
