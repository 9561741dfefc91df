"""`edgevlm doctor --tensorrt`: build the demo bundle's engines here, answer the held-out demo
questions with the TensorRT backend and with ONNX Runtime on the CPU, compare, and time decode
against the GPU's memory-bandwidth bound. Needs TensorRT, torch with CUDA and a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevlm.runtime.backends.base import DecoderStep
from edgevlm.runtime.backends.trt_memory import decode_tokens_per_s_ceiling

# Greedy answers of an unquantized bundle: TensorRT and ONNX Runtime differ only in summation
# order and fused kernels, which flips a close argmax now and then, not more.
AGREEMENT_THRESHOLD = 0.99
Report = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class DecodeSpeed:
    batch: int
    past: int
    tokens_per_s: float
    ceiling_tokens_per_s: float
    bandwidth_bytes_per_s: float

    @property
    def share_of_ceiling(self) -> float:
        return self.tokens_per_s / self.ceiling_tokens_per_s


@dataclass(frozen=True, slots=True)
class SelfTestResult:
    questions: int
    agreement: float
    threshold: float | None  # None: quantized bundle, agreement reported only
    tensorrt_seconds: float
    onnxruntime_seconds: float
    decode: DecodeSpeed

    @property
    def passed(self) -> bool:
        return self.threshold is None or self.agreement >= self.threshold


class SelfTestError(RuntimeError):
    """The self-test could not run to the end (not a disagreement: that is a result)."""


def run_selftest(bundle_dir: Path, limit: int, report: Report) -> SelfTestResult:
    from edgevlm.demo.evaluate import EvalConfig, agreement
    from edgevlm.export.tensorrt_build import BuildRequest, build_engines, plan_build
    from edgevlm.runtime.backends import BACKENDS
    from edgevlm.runtime.engine import Engine

    if "tensorrt" not in BACKENDS:
        raise SelfTestError("edgevlm.runtime.backends.create_backend does not offer 'tensorrt' yet")
    plan = plan_build(BuildRequest(bundle_dir))
    build_engines(plan, report)
    samples = EvalConfig(limit=limit).samples()
    report(f"answering {len(samples)} demo questions with ONNX Runtime (CPU)")
    ort_answers, ort_seconds = _answers(Engine.from_bundle(bundle_dir, backend="onnxruntime", device="cpu"), samples)
    report(f"answering {len(samples)} demo questions with TensorRT")
    engine = Engine.from_bundle(bundle_dir, backend="tensorrt", device="cuda")
    _require_device_cache(engine)
    trt_answers, trt_seconds = _answers(engine, samples, close=False)
    speed = measure_decode(engine)
    engine.close()
    quantized = plan.bundle.manifest.get("quantization") is not None
    return SelfTestResult(
        questions=len(samples),
        agreement=agreement(ort_answers, trt_answers),
        threshold=None if quantized else AGREEMENT_THRESHOLD,
        tensorrt_seconds=trt_seconds,
        onnxruntime_seconds=ort_seconds,
        decode=speed,
    )


def _answers(engine: Any, samples: Sequence[Any], close: bool = True) -> tuple[list[str], float]:
    from edgevlm.runtime.demo_answers import answer_batch

    started = time.perf_counter()
    answers = answer_batch(engine, samples)
    seconds = time.perf_counter() - started
    if close:
        engine.close()
    return answers, seconds


def _require_device_cache(engine: Any) -> None:
    from edgevlm.runtime.backends.trt_kv_cache import DeviceKVCache

    if not isinstance(engine.cache, DeviceKVCache):
        engine.close()
        raise SelfTestError(
            "the runtime engine made a host KV cache for the TensorRT backend: "
            "edgevlm.runtime.engine must create it with backend.create_cache(layout)"
        )


def measure_decode(engine: Any, steps: int = 30, warmup: int = 5) -> DecodeSpeed:
    """Decode steps at the tuned batch, half-full context, on the engine's idle cache (they write
    K/V at position `past` of rows no sequence holds)."""
    from edgevlm.runtime.backends.trt_device import copy_bandwidth

    backend, layout = engine.backend, engine.cache.layout
    batch = max(1, min(backend.manifest.limits.opt_batch, layout.rows))
    past = layout.max_len // 2
    step = synthetic_decode_step(batch, past, engine.bundle.architecture.hidden_size, engine.bundle.dtype)
    for _ in range(warmup):
        backend.decode(step, engine.cache)
    started = time.perf_counter()
    for _ in range(steps):
        backend.decode(step, engine.cache)
    tokens_per_s = batch * steps / (time.perf_counter() - started)
    bandwidth = copy_bandwidth(backend.device)
    ceiling = decode_tokens_per_s_ceiling(
        bandwidth, backend.manifest.decoder.bytes, batch * past * layout.bytes_per_token, batch
    )
    return DecodeSpeed(batch, past, tokens_per_s, ceiling, bandwidth)


def synthetic_decode_step(batch: int, past: int, hidden: int, dtype: np.dtype) -> DecoderStep:
    """One token per row over `past` cached positions (all visible)."""
    rng = np.random.default_rng(0)
    return DecoderStep(
        inputs_embeds=(rng.standard_normal((batch, 1, hidden)) * 0.02).astype(dtype),
        position_ids=np.full((3, batch, 1), past, np.int64),
        logits_index=np.zeros(batch, np.int64),
        first_row=0,
        starts=np.full(batch, past, np.int64),
        counts=np.ones(batch, np.int64),
    )


def format_result(result: SelfTestResult) -> list[str]:
    speed = result.decode
    verdict = "reported only (quantized bundle)" if result.threshold is None else (
        f"{'ok' if result.passed else 'FAIL'} (needs >= {result.threshold:.0%})"
    )
    return [
        f"answers: {result.agreement:.1%} identical to ONNX Runtime CPU over {result.questions} questions: {verdict}",
        f"eval time: TensorRT {result.tensorrt_seconds:.1f} s, ONNX Runtime CPU {result.onnxruntime_seconds:.1f} s",
        f"decode: {speed.tokens_per_s:.0f} tokens/s at batch {speed.batch}, {speed.past} cached tokens; "
        f"memory-bandwidth bound {speed.ceiling_tokens_per_s:.0f} tokens/s "
        f"({speed.bandwidth_bytes_per_s / 1e9:.0f} GB/s measured copy bandwidth): "
        f"{speed.share_of_ceiling:.0%} of the bound",
    ]
