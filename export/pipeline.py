"""checkpoint -> bundle: load, trace, convert, optimise, validate, then one atomic rename.

Memory: the model is loaded once (memory-mapped) in the export dtype and the graphs reuse its
tensors; each graph's exporter objects are dropped once its file is written. The float32 reference
computes on those same stored weights (`reference.py`), and the torch model is freed before ONNX
Runtime loads the bundle, so torch and ONNX Runtime never hold the weights at the same time.
"""

from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevlm.errors import UserError
from edgevlm.export import assets, manifest, onnx_export, parity
from edgevlm.export.checkpoint import CheckpointInfo, inspect_checkpoint, load_model
from edgevlm.export.options import ExportOptions
from edgevlm.export.progress import Progress
from edgevlm.export.reference import float32_reference
from edgevlm.export.staging import check_output, staged_output

GRAPH_FILES = {"vision": "vision.onnx", "decoder": "decoder.onnx"}
# The graphs' ONNX Runtime CPU forms (vision_mha.py, decoder_gqa.py), each beside its graph and
# reading its weights. Only for fp32: ONNX Runtime's CPU GroupQueryAttention kernel is float32.
CPU_FORM_FILES = {"vision": "vision.cpu.onnx", "decoder": "decoder.cpu.onnx"}
CPU_FORM_KERNELS = {"vision": "com.microsoft.MultiHeadAttention (one attention block per call, unmasked)",
                    "decoder": "com.microsoft.GroupQueryAttention (KV cache updated in place)"}


@dataclass(frozen=True, slots=True)
class ExportResult:
    """Where the bundle went and what its manifest says."""

    out_dir: Path
    manifest: dict[str, Any]


def torch_dtype(dtype: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


def resolve_max_seq_len(options: ExportOptions, info: CheckpointInfo) -> int:
    """--max-seq-len, or the model's max_position_embeddings; never beyond it."""
    limit = int(info.config.get("text_config", {}).get("max_position_embeddings", 0)) or None
    wanted = options.max_seq_len or limit
    if wanted is None:
        raise UserError("the checkpoint's text_config has no max_position_embeddings: pass --max-seq-len")
    if limit is not None and wanted > limit:
        raise UserError(f"--max-seq-len {wanted} exceeds the model's max_position_embeddings {limit}")
    return wanted


def export_graph(name: str, module: Any, staging: Path, options: ExportOptions, progress: Progress,
                 file: str | None = None) -> dict:
    """Trace, convert and optimise one graph into `staging` (as `file`, by default the graph's
    GRAPH_FILES name); the exporter objects die here."""
    file = file or GRAPH_FILES[name]
    module.eval()
    with progress.stage("trace", f"{name} graph (torch.export)"):
        program = onnx_export.trace(module, module.example_inputs(), module.dynamic_shapes())
    with progress.stage("convert", f"{name} graph (opset {options.opset})"):
        onnx_program = onnx_export.convert(program, module.input_names(), module.output_names(), options.opset)
        del program
    with progress.stage("optimise", f"{name} graph -> {file}"):
        stats = onnx_export.optimise_and_save(onnx_program, module.axes(), staging / file)
        del onnx_program
        gc.collect()  # the exporter's objects hold the weights (and maps of the written file) in cycles
    mib = stats.initializer_bytes / 2**20
    progress.note(f"{stats.nodes_before_optimise} -> {stats.nodes} nodes, {mib:.1f} MiB weights")
    return {"nodes_before_optimise": stats.nodes_before_optimise, "nodes": stats.nodes,
            "initializer_bytes": stats.initializer_bytes}


def build_manifest(
    options: ExportOptions, info: CheckpointInfo, model_config: Any, processor: Any, staging: Path, embed: dict
) -> dict[str, Any]:
    """Every manifest section except files, validation and export statistics (added last)."""
    min_pixels, max_pixels = assets.pixel_limits(processor.image_processor)
    generation = assets.read_generation_config(info.path)
    return {
        "format": manifest.FORMAT,
        "schema_version": manifest.SCHEMA_VERSION,
        "created": manifest.now_iso(),
        "tool_versions": manifest.tool_versions(),
        "source": {"path": str(info.path.resolve()), "model_type": info.config["model_type"],
                   "config_sha256": info.config_sha256, "config": info.config,
                   "weight_files": [f.name for f in info.weight_files], "tensor_bytes": info.tensor_bytes},
        "dtype": options.dtype,
        "opset": options.opset,
        "architecture": manifest.architecture(model_config),
        "tokens": manifest.token_ids(model_config, generation, processor.tokenizer.get_vocab()),
        "limits": {"max_batch": options.max_batch, "max_seq_len": resolve_max_seq_len(options, info),
                   "min_pixels": min_pixels, "max_pixels": max_pixels},
        "graphs": {name: manifest.graph_signature(staging / file) for name, file in GRAPH_FILES.items()},
        "embed_tokens": embed,
        "files": {},
        "quantization": None,
        "validation": {"skipped": True},
    }


def run_export(options: ExportOptions, progress: Progress | None = None) -> ExportResult:
    """Export a checkpoint to a validated bundle at `options.out_dir`, or leave nothing behind."""
    from edgevlm.demo.hf_compat import load_processor
    from edgevlm.export.decoder import Decoder
    from edgevlm.export.vision import VisionEncoder

    progress = progress or Progress(None)
    start = time.perf_counter()
    info = inspect_checkpoint(options.model_dir)
    check_output(options.out_dir, options.force)
    resolve_max_seq_len(options, info)
    with staged_output(options.out_dir, options.force) as staging:
        # load
        with progress.stage("load", f"{info.path} as {options.dtype}"):
            model = load_model(info.path, torch_dtype(options.dtype))
            processor = load_processor(info.path)
        # trace, convert, optimise: one graph at a time
        graph_stats = {
            "vision": export_graph("vision", VisionEncoder(model.model.visual), staging, options, progress),
            "decoder": export_graph("decoder", Decoder(model), staging, options, progress),
        }
        if options.dtype == "fp32":
            graph_stats.update(export_cpu_forms(model, staging, options, progress))
        embed = assets.write_embed_tokens(model.model.language_model.embed_tokens.weight, staging)
        copied = assets.copy_assets(info.path, staging)
        bundle = build_manifest(options, info, model.config, processor, staging, embed)
        for name in cpu_forms(staging):
            bundle["graphs"][name]["cpu_form"] = cpu_form_entry(staging, name)
        # validate: the torch reference, then torch is freed, then ONNX Runtime
        reference = inputs = None
        if options.validate:
            with progress.stage("validate", "PyTorch reference (float32, HF forward + DynamicCache)"):
                inputs = parity.parity_inputs(processor)
                reference = parity.torch_reference(float32_reference(model), inputs)
        del model  # torch's weights go before ONNX Runtime loads the bundle's
        gc.collect()
        if reference is not None and inputs is not None:
            with progress.stage("validate", "ONNX Runtime CPU through the KV interface, teacher-forced"):
                candidate = parity.onnx_candidate(staging, bundle, inputs, reference.tokens)
            report = parity.compare(reference, candidate, options.dtype, progress.seconds["validate"])
            progress.note(_summary(report))
            parity.check_parity(report)
            bundle["validation"] = report.as_manifest()
            if cpu_forms(staging):
                bundle["validation"]["cpu_form"] = _validate_cpu_form(staging, bundle, inputs, reference, progress)
        # write: hashes, statistics, manifest; staged_output renames the folder into place
        forms = [CPU_FORM_FILES[name] for name in cpu_forms(staging)]
        bundle["files"] = manifest.file_entries(staging, [*GRAPH_FILES.values(), *forms, *_data_files(staging),
                                                           embed["file"], *copied])
        bundle["export"] = {
            "seconds": round(time.perf_counter() - start, 1),
            "stage_seconds": dict(progress.seconds),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "graphs": graph_stats,
        }
        manifest.write_manifest(staging, bundle)
    return ExportResult(options.out_dir, bundle)


def export_cpu_forms(model: Any, staging: Path, options: ExportOptions, progress: Progress) -> dict[str, dict]:
    """vision.cpu.onnx and decoder.cpu.onnx, their weights pointed into their graphs' data."""
    from edgevlm.export.decoder_gqa import GqaDecoder
    from edgevlm.export.shared_weights import share_weights
    from edgevlm.export.vision_mha import MhaVisionEncoder

    modules = {"vision": MhaVisionEncoder(model.model.visual), "decoder": GqaDecoder(model)}
    stats = {}
    for name, module in modules.items():
        file = CPU_FORM_FILES[name]
        graph = export_graph(name, module, staging, options, progress, file)
        with progress.stage("optimise", f"{file}: weights read from {GRAPH_FILES[name]}.data"):
            shared = share_weights(staging / file, staging / GRAPH_FILES[name])
        progress.note(f"{shared.shared} weights shared, {shared.own} own ({shared.own_bytes} bytes)")
        stats[f"{name}_cpu_form"] = {**graph, "shared_weights": shared.shared, "own_bytes": shared.own_bytes}
    return stats


def cpu_forms(staging: Path) -> list[str]:
    """The graphs that have a CPU form in `staging`."""
    return [name for name, file in CPU_FORM_FILES.items() if (staging / file).exists()]


def cpu_form_entry(staging: Path, name: str) -> dict[str, Any]:
    """The manifest's graphs.<name>.cpu_form: file, the data file it reads, and its signature."""
    signature = manifest.graph_signature(staging / CPU_FORM_FILES[name])
    return {**signature, "external_data": f"{GRAPH_FILES[name]}.data", "attention": CPU_FORM_KERNELS[name]}


def _validate_cpu_form(staging: Path, bundle: dict[str, Any], inputs: Any, reference: Any,
                       progress: Progress) -> dict[str, Any]:
    """The CPU forms through the same teacher-forced run, held to the same gate."""
    with progress.stage("validate", "the CPU forms through the same run"):
        candidate = parity.onnx_candidate(staging, bundle, inputs, reference.tokens, cpu_form=True)
    report = parity.compare(reference, candidate, bundle["dtype"], progress.seconds["validate"])
    progress.note(f"CPU forms: {_summary(report)}")
    parity.check_parity(report)
    return report.as_manifest()


def _data_files(staging: Path) -> list[str]:
    return [f"{file}.data" for file in GRAPH_FILES.values() if (staging / f"{file}.data").exists()]


def _summary(report: parity.ParityReport) -> str:
    return (
        f"vision max abs {report.vision_max_abs:.2e} rel {report.vision_max_rel:.2e}; "
        f"logits max abs {report.logits_max_abs:.2e} rel {report.logits_max_rel:.2e}; "
        f"greedy {report.greedy_matched}/{report.greedy_tokens} identical"
        + (f" (+{report.near_ties} near-ties)" if report.near_ties else "")
    )
