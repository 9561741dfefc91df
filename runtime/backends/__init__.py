"""Inference backends: one module per runtime, chosen by name (imports stay lazy)."""

from __future__ import annotations

from edgevlm.runtime.backends.base import Backend

BACKENDS: tuple[str, ...] = ("onnxruntime", "tensorrt")


def create_backend(name: str, bundle, **options) -> Backend:
    if name == "onnxruntime":
        from edgevlm.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, **options)
    if name == "tensorrt":
        from edgevlm.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(bundle, **options)
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
