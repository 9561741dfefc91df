"""W8A8 with explicit Q/DQ (ONNX Runtime `quantize_static`, QuantFormat.QDQ), in the form TensorRT
consumes: int8 weights and activations, both symmetric (zero point 0), weights per output channel,
activations per tensor, biases left float (TensorRT has no int32-bias DequantizeLinear).

Weights use the reduced int8 range [-64, 64] (ORT's `reduce_range`). Rule: on x86 without VNNI
(AVX2, like this project's build machines), ONNX Runtime's uint8 x int8 kernels add products in
pairs into int16, which saturates above 32767; 2 x 255 x 64 stays below it, 2 x 255 x 127 does
not (measured: errors of 60 % of the output on full-range random weights). TensorRT reads the same
values as ordinary int8, at one bit less weight resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgevlm.calibration.policy import LINEAR_OPS, QuantPlan
from edgevlm.calibration.recorder import Feed

ORT_METHODS: dict[str, str] = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
DEFAULT_METHOD = "percentile"  # activation ranges for int8 graphs made in other modes (int4's vision)
# MinMax keeps this many runs' intermediate outputs before folding them into running ranges.
MAX_INTERMEDIATE_OUTPUTS = 8
EXTRA_OPTIONS: dict[str, object] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "CalibTensorRangeSymmetric": True,
    "CalibMaxIntermediateOutputs": MAX_INTERMEDIATE_OUTPUTS,
}


def _extra_options(method: str) -> dict[str, object]:
    options = dict(EXTRA_OPTIONS)
    if method != "minmax":
        # ORT's histogram calibrators stack each tensor's values over all feeds of one collect
        # call, which fails when feeds differ in shape (prompts differ in length); one feed per
        # call (its "strided" loop with stride 1) merges histograms instead.
        options["CalibStridedMinMax"] = 1
    return options


def quantize_graph(src: Path, dst: Path, plan: QuantPlan, method: str, feeds: Sequence[Feed] | None,
                   cache_file: Path) -> None:
    """Quantize `plan.quantize` of `src` into `dst` (+ `dst.name`.data). Activation ranges come from
    `cache_file` when it exists, else from calibrating on `feeds`, and are then saved there."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgevlm.calibration.feed_reader import FeedReader

    if method not in ORT_METHODS:
        raise ValueError(f"method must be one of {tuple(ORT_METHODS)}, got {method!r}")
    if not plan.quantize:
        raise ValueError(f"the {plan.graph} plan quantizes no node (ONNX Runtime would read that as all nodes)")
    if feeds is None and not cache_file.is_file():
        raise ValueError("feeds are needed when there is no calibration cache to reuse")
    quantize_static(
        str(src), str(dst), FeedReader(feeds or ()),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(LINEAR_OPS),
        nodes_to_quantize=list(plan.quantize),
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        use_external_data_format=True,
        calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
        extra_options=_extra_options(method),
        calibration_cache_path=str(cache_file),
    )
