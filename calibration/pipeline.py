"""fp32 bundle -> quantized bundle: prepare, calibrate, quantize, evaluate, gate, then one atomic
rename. The bundle is built in a staging folder beside OUT (export's `staged_output`): a refused
gate, an error or Ctrl-C removes it and leaves OUT as it was."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevlm.calibration import bundle_io, cache, int4, int8, policy
from edgevlm.calibration.calib_data import CalibrationSet, calibration_set
from edgevlm.calibration.collect import CalibrationFeeds, collect_feeds
from edgevlm.calibration.gate import GateResult
from edgevlm.calibration.options import QuantizeOptions
from edgevlm.calibration.prepare import preprocess
from edgevlm.calibration.progress import Progress
from edgevlm.calibration.qdq_check import qdq_problems
from edgevlm.calibration.scoring import describe_eval, read_eval_file, score_bundle


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    out_dir: Path
    manifest: dict[str, Any]
    gate: GateResult


def needs_feeds(options: QuantizeOptions) -> bool:
    if options.mode == "int8":
        return options.calib_cache is None
    return options.resolved_method in ("awq", "gptq")


def run_quantize(options: QuantizeOptions, progress: Progress | None = None) -> QuantizeResult:
    from edgevlm.export.staging import check_output, staged_output

    progress = progress or Progress(None)
    start = time.perf_counter()
    source = bundle_io.read_source(options.bundle_dir)
    check_output(options.out_dir, options.force)
    if options.eval_file is not None:
        read_eval_file(options.eval_file)
    # Calibration input is read (and every image decoded) before any slow work, so bad input fails first.
    items = calibration_set(options.calib_images, options.calib_prompts, options.samples) \
        if needs_feeds(options) else None
    with tempfile.TemporaryDirectory(prefix="edgevlm-quantize-") as tmp, \
            staged_output(options.out_dir, options.force) as staging:
        work = Path(tmp)
        feeds = None if items is None else _calibrate(options, items, progress)
        if options.mode == "int8":
            details = _int8(options, source, feeds, work, staging, progress)
        else:
            details = _int4(options, source, feeds, staging, progress)
        bundle_io.copy_assets(options.bundle_dir, source, staging)
        quantization = _quantization(options, source, feeds, staging, details)
        bundle_io.write_manifest(staging, source, quantization)
        gate = _gate(options, staging, progress)
        quantization["accuracy"] = gate.as_manifest(describe_eval(options.eval_limit, options.eval_file))
        quantization["seconds"] = round(time.perf_counter() - start, 1)
        with progress.stage("write", f"manifest and files -> {options.out_dir}"):
            manifest = bundle_io.write_manifest(staging, source, quantization)
    return QuantizeResult(options.out_dir, manifest, gate)


def _calibrate(options: QuantizeOptions, items: CalibrationSet, progress: Progress) -> CalibrationFeeds:
    with progress.stage("calibrate", f"{len(items.items)} samples ({items.source}) through the runtime"):
        feeds = collect_feeds(options.bundle_dir, items.items)
    progress.note(f"{feeds.num_samples} samples -> {len(feeds.vision)} vision and {len(feeds.decoder)} "
                  f"decoder feeds ({feeds.num_prefill} prefill steps)")
    return feeds


def _int8(options: QuantizeOptions, source: dict[str, Any], feeds: CalibrationFeeds | None, work: Path,
          staging: Path, progress: Progress) -> dict[str, Any]:
    import onnx

    method = options.resolved_method
    reused = cache.split_cache(options.calib_cache, work, method) if options.calib_cache is not None else None
    prepared = {}
    for graph in bundle_io.GRAPHS:
        with progress.stage("prepare", f"{graph} graph (shape inference, constant folding)"):
            src = bundle_io.graph_path(options.bundle_dir, source, graph)
            prepared[graph] = preprocess(src, work / f"{graph}.prepared.onnx")
    plans = {g: policy.plan(g, onnx.load(str(p), load_external_data=False)) for g, p in prepared.items()}
    for graph, plan in plans.items():
        target = staging / bundle_io.graph_path(options.bundle_dir, source, graph).name
        with progress.stage("quantize", f"{graph} graph: {len(plan.quantize)} linears to int8 Q/DQ ({method})"):
            int8.quantize_graph(prepared[graph], target, plan, method, None if feeds is None else getattr(feeds, graph),
                                cache.graph_cache_file(work, graph))
            _check_qdq(target)
    samples = feeds.num_samples if feeds is not None else int(reused["samples"] if reused else 0)
    cache.write_cache(staging / cache.CACHE_FILE, work, method, samples, _calibration_source(options))
    return {
        "format": "qdq",
        "scheme": {"weights": "int8 symmetric, per output channel", "activations": "int8 symmetric, per tensor",
                   "zero_points": 0, "bias": "float", "tool": "onnxruntime.quantization.quantize_static"},
        "samples": samples,
        "graphs": {g: p.as_manifest() for g, p in plans.items()},
        "calibration_cache": cache.CACHE_FILE,
    }


def _check_qdq(path: Path) -> None:
    """The written graph must be in the TensorRT Q/DQ form the manifest promises."""
    import onnx

    problems = qdq_problems(onnx.load(str(path), load_external_data=False))
    if problems:
        raise RuntimeError(f"{path.name}: {len(problems)} Q/DQ nodes break the int8 symmetric form: {problems[0]}")


def _calibration_source(options: QuantizeOptions) -> str:
    if options.calib_cache is not None:
        return f"cache {options.calib_cache}"
    return "demo" if options.calib_images is None else str(options.calib_images)


def _int4(options: QuantizeOptions, source: dict[str, Any], feeds: CalibrationFeeds | None, staging: Path,
          progress: Progress) -> dict[str, Any]:
    import onnx

    method = options.resolved_method
    src = bundle_io.graph_path(options.bundle_dir, source, "decoder")
    decoder_plan = policy.plan("decoder", onnx.load(str(src), load_external_data=False))
    excluded = [n for names in decoder_plan.kept.values() for n in names]
    with progress.stage("quantize", f"decoder graph: MatMuls to 4-bit blocks of {options.block_size} ({method})"):
        count = int4.quantize_graph(src, staging / src.name, method, options.block_size, excluded,
                                    None if feeds is None else feeds.decoder)
    progress.note(f"{count} MatMuls -> MatMulNBits; vision graph kept fp32")
    bundle_io.copy_graph(options.bundle_dir, source, "vision", staging)
    return {
        "format": "matmulnbits",
        "scheme": {"weights": f"4-bit asymmetric, blocks of {options.block_size} along the input dimension",
                   "activations": "float (weight-only)", "tool": "onnxruntime MatMulNBitsQuantizer"},
        "block_size": options.block_size,
        "samples": feeds.num_samples if feeds is not None else 0,
        "graphs": {
            "vision": {"quantized_linears": 0, "kept_float": {"all": ["fp32 vision graph"]}},
            "decoder": {"quantized_linears": count, "kept_float": {k: list(v) for k, v in decoder_plan.kept.items()}},
        },
    }


def _quantization(options: QuantizeOptions, source: dict[str, Any], feeds: CalibrationFeeds | None,
                  staging: Path, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "mode": options.mode,
        "method": options.resolved_method,
        **details,
        "calibration": None if feeds is None and options.calib_cache is None else {
            "source": _calibration_source(options),
            "feeds": None if feeds is None else {"vision": len(feeds.vision), "decoder": len(feeds.decoder)},
        },
        "kept_precision": list(policy.ALWAYS_FLOAT),
        "source_bundle": str(options.bundle_dir.absolute()),
        "sizes": {"source": bundle_io.graph_bytes(options.bundle_dir, source),
                  "quantized": bundle_io.graph_bytes(staging, source)},
    }


def _gate(options: QuantizeOptions, staging: Path, progress: Progress) -> GateResult:
    what = describe_eval(options.eval_limit, options.eval_file)
    with progress.stage("evaluate", f"original bundle on {what}"):
        original = score_bundle(options.bundle_dir, options.eval_limit, options.eval_file, memo=True)
    with progress.stage("evaluate", f"{options.mode} bundle on the same questions"):
        quantized = score_bundle(staging, options.eval_limit, options.eval_file)
    gate = GateResult(original, quantized, options.resolved_max_drop, options.allow_accuracy_drop)
    with progress.stage("gate", gate.summary(options.mode)):
        gate.check(options.mode)
    return gate
