"""Execution-provider choice (pure), and that the decoder's cache rows are bound in place."""

from __future__ import annotations

import pytest

from edgevlm.runtime.backends.onnxruntime import select_providers

CPU = "CPUExecutionProvider"
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]


def test_cpu_only_by_default_and_when_asked() -> None:
    assert select_providers("cpu", GPU) == [CPU]
    assert select_providers("auto", [CPU]) == [CPU]


def test_gpu_providers_chosen_when_present() -> None:
    assert select_providers("auto", GPU) == GPU
    assert select_providers("cuda", GPU) == ["CUDAExecutionProvider", CPU]
    assert select_providers("tensorrt", GPU) == GPU


def test_missing_gpu_provider_is_an_error() -> None:
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        select_providers("cuda", [CPU])
    with pytest.raises(ValueError, match="device"):
        select_providers("tpu", [CPU])
