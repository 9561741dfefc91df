"""A bundle graph -> the form ONNX Runtime's quantizers expect: shapes inferred and constants
folded (`quant_pre_process`), so weights the exporter reshapes at run time (the patch-embed and
downsample kernels) become initializers the quantizer can see as weights.

Only ONNX Runtime's basic optimisation level runs: constant folding and redundant-node removal,
standard ONNX ops only, so the graph stays loadable by TensorRT. Symbolic shape inference is
skipped: ONNX's own inference covers these graphs, and the symbolic pass rejects some of their ops.
"""

from __future__ import annotations

from pathlib import Path


def preprocess(src: Path, dst: Path) -> Path:
    """Write the prepared copy of `src` to `dst` (weights in `dst.name + '.data'`)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst.parent.mkdir(parents=True, exist_ok=True)
    quant_pre_process(
        str(src), str(dst), skip_symbolic_shape=True, save_as_external_data=True,
        all_tensors_to_one_file=True, external_data_location=f"{dst.name}.data",
    )
    return dst
