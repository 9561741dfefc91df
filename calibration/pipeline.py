"""fp32 bundle -> quantized bundle: prepare, calibrate, quantize, evaluate, gate, then one atomic
rename. The bundle is built in a staging folder beside OUT (export's `staged_output`): a refused
gate, an error or Ctrl-C removes it and leaves OUT as it was."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevlm.calibration import (
    bundle_io,
    cache,
    cpu_form,
    embed_quant,
    gemm_to_matmul,
    inplace_form,
    int4,
    int8,
    policy,
    weight_only,
)
from edgevlm.calibration.calib_data import CalibrationSet, calibration_set
from edgevlm.calibration.collect import CalibrationFeeds, collect_feeds
from edgevlm.calibration.gate import GateResult
from edgevlm.calibration.options import QuantizeOptions
from edgevlm.calibration.prepare import preprocess
from edgevlm.calibration.progress import Progress
from edgevlm.calibration.qdq_check import qdq_problems
from edgevlm.calibration.scoring import describe_eval, read_eval_file, score_bundle
from edgevlm.runtime.bundle import load_bundle


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    out_dir: Path
    manifest: dict[str, Any]
    gate: GateResult


def needs_feeds(options: QuantizeOptions) -> bool:
    """int8 calibrates both graphs' activations; int4 its vision graph (int8) and, for awq/gptq,
    the decoder's weights."""
    return options.calib_cache is None


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
            details = _int4(options, source, feeds, work, staging, progress)
        bundle_io.copy_assets(options.bundle_dir, source, staging, skip=frozenset({source["embed_tokens"]["file"]}))
        with progress.stage("quantize", f"embedding table to {options.mode}"):
            embed = embed_quant.write_quantized(options.bundle_dir, source["embed_tokens"], staging, options.mode)
        source = {**source, "embed_tokens": embed}
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


INT8_SCHEME = {"weights": "int8 symmetric, per output channel, range [-64, 64]",
               "activations": "int8 symmetric, per tensor", "zero_points": 0, "bias": "float",
               "tool": "onnxruntime.quantization.quantize_static"}


def _int8(options: QuantizeOptions, source: dict[str, Any], feeds: CalibrationFeeds | None, work: Path,
          staging: Path, progress: Progress) -> dict[str, Any]:
    graphs = _int8_graphs(options, source, feeds, work, staging, progress, bundle_io.GRAPHS, options.resolved_method)
    return {"format": "qdq", "scheme": INT8_SCHEME, **graphs}


def _int8_graphs(options: QuantizeOptions, source: dict[str, Any], feeds: CalibrationFeeds | None, work: Path,
                 staging: Path, progress: Progress, graphs: tuple[str, ...], method: str) -> dict[str, Any]:
    """`graphs` to int8 Q/DQ in `staging` with activation ranges by `method`, each with its CPU
    form, and the calibration cache. Returns the manifest's samples, per-graph plans and cache name."""
    import onnx

    reused = cache.split_cache(options.calib_cache, work, method) if options.calib_cache is not None else None
    prepared = {}
    for graph in graphs:
        with progress.stage("prepare", f"{graph} graph (shape inference, constant folding)"):
            src = bundle_io.graph_path(options.bundle_dir, source, graph)
            prepared[graph] = preprocess(src, work / f"{graph}.prepared.onnx")
    for path in prepared.values():
        linears = policy.linear_nodes(onnx.load(str(path), load_external_data=False))
        gemm_to_matmul.gemms_as_matmul(path, [n.name for n in linears if n.op_type == "Gemm"])
    plans = {g: policy.plan(g, onnx.load(str(p), load_external_data=False)) for g, p in prepared.items()}
    cpu_forms = {}
    for graph, plan in plans.items():
        target = staging / bundle_io.graph_path(options.bundle_dir, source, graph).name
        with progress.stage("quantize", f"{graph} graph: {len(plan.quantize)} linears to int8 Q/DQ ({method})"):
            int8.quantize_graph(prepared[graph], target, plan, method, None if feeds is None else getattr(feeds, graph),
                                cache.graph_cache_file(work, graph))
            _make_weight_only(target, plan.weight_only_nodes)
            _check_qdq(target)
        with progress.stage("quantize", f"{graph} graph: ONNX Runtime CPU form"):
            cpu_forms[graph] = _write_cpu_form(options, source, graph, target, staging)
    samples = feeds.num_samples if feeds is not None else int(reused["samples"] if reused else 0)
    cache.write_cache(staging / cache.CACHE_FILE, work, method, samples, _calibration_source(options))
    return {
        "samples": samples,
        "graphs": {g: {**p.as_manifest(), "cpu_form": cpu_forms[g]} for g, p in plans.items()},
        "calibration_cache": cache.CACHE_FILE,
    }


def _write_cpu_form(options: QuantizeOptions, source: dict[str, Any], graph: str, target: Path,
                    staging: Path) -> dict[str, Any]:
    """The int8 graph's served CPU form: built on the fp32 bundle's own CPU form when it has one
    (fused vision attention, in-place decoder cache: `inplace_form.py`), else on the Q/DQ graph
    (`cpu_form.py`). Returns what the manifest records, including which graph it was built on."""
    dst = staging / bundle_io.cpu_form_name(target.name)
    form = source["graphs"][graph].get("cpu_form")
    if form:
        try:
            return {"built_on": form["file"], **inplace_form.write_inplace_form(options.bundle_dir / form["file"],
                                                                                target, dst)}
        except RuntimeError as exc:  # an int8 weight without its float twin: the Q/DQ graph's own form
            return {"built_on": target.name, "why": str(exc), **cpu_form.write_cpu_form(target, dst)}
    return {"built_on": target.name, **cpu_form.write_cpu_form(target, dst)}


def _make_weight_only(path: Path, nodes: tuple[str, ...]) -> None:
    """The plan's weight-only linears lose their input Q/DQ (`weight_only.py`)."""
    import onnx

    if not nodes:
        return
    model = onnx.load(str(path), load_external_data=False)
    if weight_only.drop_input_qdq(model, nodes) != len(nodes):
        raise RuntimeError(f"{path.name}: not every weight-only linear had an input Q/DQ pair to remove")
    onnx.save(model, str(path))


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


def _int4(options: QuantizeOptions, source: dict[str, Any], feeds: CalibrationFeeds | None, work: Path,
          staging: Path, progress: Progress) -> dict[str, Any]:
    import onnx

    method = options.resolved_method
    src = bundle_io.graph_path(options.bundle_dir, source, "decoder")
    graph = onnx.load(str(src), load_external_data=False)
    decoder_plan = policy.plan("decoder", graph)
    excluded = [n for names in decoder_plan.kept.values() for n in names]
    with progress.stage("quantize", f"decoder graph: MatMuls to 4-bit blocks of {options.block_size} ({method})"):
        count = int4.quantize_graph(src, staging / src.name, method, options.block_size, excluded,
                                    None if feeds is None else feeds.decoder, policy.lm_head_node(graph))
    progress.note(f"{count} MatMuls -> MatMulNBits (lm_head included)")
    cpu_entry = _int4_cpu_form(options, source, staging, progress)
    vision = _int8_graphs(options, source, feeds, work, staging, progress, ("vision",), int8.DEFAULT_METHOD)
    return {
        "format": "matmulnbits",
        "scheme": {"weights": f"4-bit asymmetric, blocks of {options.block_size} along the input dimension",
                   "activations": "float in the graph; ONNX Runtime CPU computes in int8 per block "
                                  f"(accuracy_level {int4.ACCURACY_LEVEL})",
                   "lm_head": "4-bit like the other linears", "tool": "onnxruntime MatMulNBitsQuantizer"},
        "vision_scheme": {**INT8_SCHEME, "why": "issue 7: the vision encoder stays fp16/int8; int8 is 1/4 of fp32"},
        "block_size": options.block_size,
        "samples": vision["samples"],
        "calibration_cache": vision["calibration_cache"],
        "graphs": {
            "vision": vision["graphs"]["vision"],
            "decoder": {"quantized_linears": count, "kept_float": {k: list(v) for k, v in decoder_plan.kept.items()},
                        "cpu_form": cpu_entry},
        },
    }


def _int4_cpu_form(options: QuantizeOptions, source: dict[str, Any], staging: Path,
                   progress: Progress) -> dict[str, Any] | None:
    """The source's in-place decoder CPU form (export/decoder_gqa.py) quantized the same way, its
    4-bit weights pointed into the quantized decoder.onnx's data (rtn is deterministic, so every one
    has a twin). awq and gptq fit their weights on the portable graph's feeds: those bundles serve
    the portable form, without one."""
    import onnx

    from edgevlm.export.shared_weights import share_weights

    form = source["graphs"]["decoder"].get("cpu_form")
    if not form or options.resolved_method != "rtn":
        return None
    src, dst = options.bundle_dir / form["file"], staging / form["file"]
    graph = onnx.load(str(src), load_external_data=False)
    plan = policy.plan("decoder", graph)
    excluded = [n for names in plan.kept.values() for n in names]
    with progress.stage("quantize", f"{form['file']}: the same 4-bit blocks, weights shared"):
        count = int4.quantize_graph(src, dst, "rtn", options.block_size, excluded, None, policy.lm_head_node(graph))
        shared = share_weights(dst, staging / source["graphs"]["decoder"]["file"])
    return {"file": form["file"], "quantized_linears": count, "shared_weights": shared.shared}


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
                  "quantized": bundle_io.graph_bytes(staging, source),
                  "bundle": {"source": bundle_io.folder_bytes(options.bundle_dir),
                             "quantized": bundle_io.folder_bytes(staging)}},
        "embed_tokens": source["embed_tokens"]["scheme"],
    }


def _gate(options: QuantizeOptions, staging: Path, progress: Progress) -> GateResult:
    what = describe_eval(options.eval_limit, options.eval_file)
    with progress.stage("evaluate", f"original bundle on {what}"):
        original = score_bundle(options.bundle_dir, options.eval_limit, options.eval_file, memo=True)
    forms = {}
    with progress.stage("evaluate", f"{options.mode} bundle on the same questions"):
        forms["served"] = score_bundle(staging, options.eval_limit, options.eval_file)
    written = load_bundle(staging)
    if written.decoder_cpu_file or written.vision_cpu_file:
        # The CPU form quantizes activations per call, so broken static scales would not show in
        # its score: the Q/DQ graphs TensorRT runs are scored too, and the worse score is gated.
        with progress.stage("evaluate", f"{options.mode} Q/DQ graphs (the TensorRT form) on the same questions"):
            forms["qdq"] = score_bundle(staging, options.eval_limit, options.eval_file, cpu_form=False)
    worst = min(forms.values(), key=lambda s: s.points)
    gate = GateResult(original, worst, options.resolved_max_drop, options.allow_accuracy_drop, forms)
    with progress.stage("gate", gate.summary(options.mode)):
        gate.check(options.mode)
    return gate
