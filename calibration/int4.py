"""Decoder weights to 4 bits, block-wise along the input dimension, as ONNX Runtime `MatMulNBits`
(`MatMulNBitsQuantizer`). Activations stay float: this is weight-only quantization.

- rtn: round to nearest, ORT's built-in (C++) quantizer; asymmetric (uint4 + a zero point per
  block), which fits skewed weight blocks better than symmetric at the same size.
- gptq: ORT's GPTQ (its bundled Intel Neural Compressor code, offline) on the recorded decoder feeds.
- awq: activation-aware scales (`awq.py`) folded into the weights, then rtn.

Only MatMuls with constant weights become MatMulNBits (the lm_head is turned from Gemm into one
first, `gemm_to_matmul.py`); the attention products stay float (both operands are activations).
Every MatMulNBits gets accuracy_level 4: ONNX Runtime's CPU kernel then quantizes its input to
int8 per block at run time and multiplies with VNNI int8 dot products, instead of widening the
4-bit weights to float (measured on the 0.5 B bench model: 37 vs 58 ms per decode step).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgevlm.calibration.recorder import Feed

METHODS: tuple[str, ...] = ("rtn", "gptq", "awq")
ACCURACY_LEVEL = 4  # MatMulNBits: int8 compute


def quantize_graph(src: Path, dst: Path, method: str, block_size: int, exclude: Sequence[str] = (),
                   feeds: Sequence[Feed] | None = None, lm_head_node: str | None = None) -> int:
    """Write the 4-bit copy of `src` to `dst` (+ `dst.name`.data); returns how many MatMuls became
    MatMulNBits. `lm_head_node`, a Gemm, is made a MatMul first so it is quantized too."""
    import onnx

    from edgevlm.calibration.gemm_to_matmul import gemms_as_matmul_loaded

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in ("gptq", "awq") and not feeds:
        raise ValueError(f"method {method} needs calibration feeds")
    model = onnx.load(str(src))
    if lm_head_node is not None:
        gemms_as_matmul_loaded(model, [lm_head_node])
    if method == "awq":
        from edgevlm.calibration.awq import apply_awq

        model = apply_awq(model, feeds or (), block_size, exclude)
    quantizer = _quantizer(model, method, block_size, exclude, feeds)
    quantizer.process()
    nbits = [node for node in quantizer.model.model.graph.node if node.op_type == "MatMulNBits"]
    for node in nbits:
        _set_accuracy_level(node)
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=True)
    return len(nbits)


def _set_accuracy_level(node) -> None:
    from onnx import helper

    kept = [a for a in node.attribute if a.name != "accuracy_level"]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute("accuracy_level", ACCURACY_LEVEL)])


def _quantizer(model, method: str, block_size: int, exclude: Sequence[str], feeds: Sequence[Feed] | None):
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        GPTQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    if method == "gptq":
        from edgevlm.calibration.feed_reader import FeedReader

        config = GPTQWeightOnlyQuantConfig(calibration_data_reader=FeedReader(feeds or ()), block_size=block_size)
    else:
        config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=False)
    return MatMulNBitsQuantizer(model, block_size=block_size, is_symmetric=False,
                                nodes_to_exclude=list(exclude), algo_config=config)
