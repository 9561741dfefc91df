"""Decoder weights to 4 bits, block-wise along the input dimension, as ONNX Runtime `MatMulNBits`
(`MatMulNBitsQuantizer`). Activations stay float: this is weight-only quantization.

- rtn: round to nearest, ORT's built-in (C++) quantizer; asymmetric (uint4 + a zero point per
  block), which fits skewed weight blocks better than symmetric at the same size.
- gptq: ORT's GPTQ (its bundled Intel Neural Compressor code, offline) on the recorded decoder feeds.
- awq: activation-aware scales (`awq.py`) folded into the weights, then rtn.

Only MatMuls with constant weights become MatMulNBits; the lm_head is a Gemm in these graphs and
stays float, as do the attention products (both operands are activations).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgevlm.calibration.recorder import Feed

METHODS: tuple[str, ...] = ("rtn", "gptq", "awq")


def quantize_graph(src: Path, dst: Path, method: str, block_size: int, exclude: Sequence[str] = (),
                   feeds: Sequence[Feed] | None = None) -> int:
    """Write the 4-bit copy of `src` to `dst` (+ `dst.name`.data); returns how many MatMuls became
    MatMulNBits."""
    import onnx

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in ("gptq", "awq") and not feeds:
        raise ValueError(f"method {method} needs calibration feeds")
    model = onnx.load(str(src))
    if method == "awq":
        from edgevlm.calibration.awq import apply_awq

        model = apply_awq(model, feeds or (), block_size, exclude)
    quantizer = _quantizer(model, method, block_size, exclude, feeds)
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=True)
    return sum(1 for node in quantizer.model.model.graph.node if node.op_type == "MatMulNBits")


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
