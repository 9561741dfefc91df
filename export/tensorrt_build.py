"""Build the bundle's TensorRT engines on the GPU that will run them (`edgevlm build-engine`).

Planning is pure Python (limits, profiles, paths; tested without TensorRT); building calls
TensorRT, and all its build-side calls are in `_build_serialized` and `_progress_monitor`:
- strongly typed network: tensor types come from the ONNX graph (fp16/bf16 weights, INT8/INT4
  from its Q/DQ nodes); no precision builder flags, no calibrator (TensorRT 11 has neither);
- `parse_from_file`, so graphs with external data (weights over 2 GB) parse from their folder;
- one optimization profile per entry of `Profile`s (decoder: prefill, decode; vision: patches);
- an optional timing cache, read before and written after, to make rebuilds fast.
The output folder gets `vision.plan`, `decoder.plan` and a manifest naming the TensorRT release,
GPU, profiles and flags, which the runtime checks before loading anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgevlm.errors import UserError
from edgevlm.export.engine_profiles import EngineLimits, Profile, decoder_profiles, vision_profile
from edgevlm.runtime.backends.trt_manifest import (
    EngineFile,
    EngineManifest,
    default_engine_dir,
    file_digest,
    manifest_digest,
    write_engine_manifest,
)
from edgevlm.runtime.bundle import Bundle, load_bundle

MB = 1 << 20
Report = Callable[[str], None]


class EngineBuildError(UserError):
    """TensorRT could not parse or build a graph."""


@dataclass(frozen=True, slots=True)
class BuildRequest:
    bundle_dir: Path
    out_dir: Path | None = None
    max_batch: int | None = None
    max_seq_len: int | None = None
    opt_batch: int | None = None
    prefill_chunk: int | None = None
    vision_max_images: int = 1
    timing_cache: Path | None = None
    workspace_mb: int | None = None

    def __post_init__(self) -> None:
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise ValueError(f"workspace_mb must be >= 1, got {self.workspace_mb}")


@dataclass(frozen=True, slots=True)
class GraphPlan:
    name: str  # "vision" | "decoder"
    onnx: Path
    engine_file: str
    profiles: tuple[Profile, ...]


@dataclass(frozen=True, slots=True)
class BuildPlan:
    bundle: Bundle
    out_dir: Path
    limits: EngineLimits
    graphs: tuple[GraphPlan, ...]
    timing_cache: Path | None
    workspace_mb: int | None


def plan_build(request: BuildRequest) -> BuildPlan:
    """Everything about the build that needs no GPU; UserError on bad input."""
    bundle = load_bundle(request.bundle_dir)
    try:
        limits = EngineLimits.from_bundle(
            bundle.limits, max_batch=request.max_batch, max_seq_len=request.max_seq_len,
            opt_batch=request.opt_batch, prefill_chunk=request.prefill_chunk,
            vision_max_images=request.vision_max_images,
        )
        decoder = decoder_profiles(bundle.architecture, limits, _graph_inputs(bundle, "decoder"))
        vision = (vision_profile(bundle.architecture.vision, limits, _graph_inputs(bundle, "vision")),)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if request.timing_cache is not None and request.timing_cache.is_dir():
        raise UserError(f"--timing-cache {request.timing_cache} is a folder, not a file")
    return BuildPlan(
        bundle=bundle,
        out_dir=request.out_dir if request.out_dir is not None else default_engine_dir(bundle.path),
        limits=limits,
        graphs=(
            GraphPlan("vision", bundle.vision_file, "vision.plan", vision),
            GraphPlan("decoder", bundle.decoder_file, "decoder.plan", decoder),
        ),
        timing_cache=request.timing_cache,
        workspace_mb=request.workspace_mb,
    )


def _graph_inputs(bundle: Bundle, graph: str) -> dict[str, Any] | None:
    """The manifest's declared input shapes, when the exporter recorded them."""
    inputs = bundle.manifest.get("graphs", {}).get(graph, {}).get("inputs")
    return inputs or None


def build_engines(plan: BuildPlan, report: Report) -> EngineManifest:
    """Build both engines into plan.out_dir and write its manifest. Needs TensorRT and a GPU."""
    from edgevlm.runtime.backends.trt_device import device_info, torch_device
    from edgevlm.runtime.backends.trt_engine import tensorrt_module
    from edgevlm.runtime.backends.trt_version import parse_version, quirks_for

    trt = tensorrt_module()
    version = parse_version(trt.__version__)
    quirks = quirks_for(version)
    target = device_info(torch_device("cuda")).target(str(version))
    report(f"building on {target.describe()} into {plan.out_dir}")
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    cache = plan.timing_cache.read_bytes() if plan.timing_cache and plan.timing_cache.is_file() else b""
    files: dict[str, EngineFile] = {}
    for index, graph in enumerate(plan.graphs, start=1):
        report(f"[{index}/{len(plan.graphs)}] {graph.name}: parsing {graph.onnx.name}")
        started = time.perf_counter()
        engine, cache = _build_serialized(trt, quirks.network_flags, graph, plan.workspace_mb, cache, report)
        path = _write_atomic(plan.out_dir / graph.engine_file, engine)
        del engine  # a large model's plan is as big as its weights: drop it before the next build
        files[graph.name] = EngineFile(graph.engine_file, path.stat().st_size, file_digest(path), graph.profiles)
        report(f"[{index}/{len(plan.graphs)}] {graph.name}: {path.stat().st_size / MB:.1f} MB in "
               f"{time.perf_counter() - started:.0f} s -> {path}")
    if plan.timing_cache is not None:
        _write_atomic(plan.timing_cache, cache)
    manifest = EngineManifest(
        target=target,
        bundle_manifest_sha256=manifest_digest(plan.bundle.path),
        limits=plan.limits,
        build=_build_record(plan, quirks.network_flags),
        vision=files["vision"],
        decoder=files["decoder"],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    report(f"manifest: {write_engine_manifest(plan.out_dir, manifest)}")
    return manifest


def _build_record(plan: BuildPlan, network_flags: tuple[str, ...]) -> dict[str, Any]:
    return {
        "strongly_typed": True,
        "network_flags": list(network_flags),
        "builder_flags": [],
        "workspace_mb": plan.workspace_mb,
        "timing_cache": str(plan.timing_cache) if plan.timing_cache is not None else None,
        "bundle_dtype": plan.bundle.manifest.get("dtype"),
        "quantization": plan.bundle.manifest.get("quantization"),
    }


def _build_serialized(trt: Any, network_flags: tuple[str, ...], graph: GraphPlan, workspace_mb: int | None,
                      timing_cache: bytes, report: Report) -> tuple[Any, bytes]:
    """# -> (serialized engine as TensorRT's host buffer, updated timing cache)"""
    from edgevlm.runtime.backends.trt_engine import logger

    builder = trt.Builder(logger())
    flags = 0
    for name in network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger())
    if not parser.parse_from_file(str(graph.onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT could not parse {graph.onnx}: " + " | ".join(errors[:3]))
    config = builder.create_builder_config()
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * MB)
    config.set_timing_cache(config.create_timing_cache(timing_cache), ignore_mismatch=False)
    for profile in graph.profiles:
        optimization = builder.create_optimization_profile()
        for name, shapes in profile.shapes.items():
            optimization.set_shape(name, shapes.min, shapes.opt, shapes.max)
        config.add_optimization_profile(optimization)
    monitor = _progress_monitor(trt, report)
    config.progress_monitor = monitor
    report(f"    building ({', '.join(p.name for p in graph.profiles)} profiles; this takes minutes)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {graph.name} (its log above says why)")
    return serialized, memoryview(config.get_timing_cache().serialize()).tobytes()


def _progress_monitor(trt: Any, report: Report) -> Any:
    """TensorRT's IProgressMonitor, reporting its top-level phases (nested ones are noise)."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                report(f"    {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            return None

    return Monitor()


def _write_atomic(path: Path, data: Any) -> Path:
    """A reader never sees a half-written engine: write beside it, then rename over it.
    `data` is any buffer (bytes, TensorRT's IHostMemory): written without a copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return path
