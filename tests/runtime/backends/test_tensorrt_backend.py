"""Backend selection without a GPU: what `--backend tensorrt` and `--backend onnxruntime --device cuda`
say when TensorRT, a GPU or onnxruntime-gpu is missing (synthetic machines, then this one)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edgevlm.errors import UserError
from edgevlm.runtime.backends.trt_preflight import (
    NO_GPU,
    NO_ORT_GPU,
    NO_TENSORRT,
    NO_TORCH,
    GpuFacts,
    backend_problems,
    check_backend,
    cuda_device_count,
    probe,
)

READY = GpuFacts(cuda_devices=1, tensorrt="10.3.0.30", torch="2.5.0", torch_cuda=True, onnxruntime="1.22.0",
                 ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))
CPU_BOX = GpuFacts(cuda_devices=0, tensorrt=None, torch=None, torch_cuda=False, onnxruntime="1.22.0",
                   ort_providers=("CPUExecutionProvider",))


def test_a_ready_machine_has_no_problems() -> None:
    for backend, device in (("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("onnxruntime", "tensorrt"),
                            ("onnxruntime", "cpu")):
        assert backend_problems(backend, device, READY) == []
    check_backend("tensorrt", facts=READY)


def test_cpu_always_runs() -> None:
    assert backend_problems("onnxruntime", "cpu", CPU_BOX) == []


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (replace(READY, cuda_devices=0), [NO_GPU]),
        (replace(READY, tensorrt=None), [NO_TENSORRT]),
        (replace(READY, torch=None, torch_cuda=False), [NO_TORCH]),
        (replace(READY, torch="2.5.0+cpu", torch_cuda=False),
         ["PyTorch 2.5.0+cpu is a CPU-only build (need a CUDA build; Jetson: NVIDIA's JetPack wheels)"]),
        (CPU_BOX, [NO_GPU, NO_TENSORRT, NO_TORCH]),
    ],
)
def test_tensorrt_names_everything_missing(facts: GpuFacts, expected: list[str]) -> None:
    assert backend_problems("tensorrt", "cuda", facts) == expected


def test_onnxruntime_cuda_needs_a_gpu_and_onnxruntime_gpu() -> None:
    cpu_wheel = replace(READY, ort_providers=("CPUExecutionProvider",))
    assert backend_problems("onnxruntime", "cuda", cpu_wheel) == [NO_ORT_GPU]
    assert backend_problems("onnxruntime", "cuda", replace(READY, cuda_devices=0)) == [NO_GPU]
    assert backend_problems("onnxruntime", "cuda", CPU_BOX) == [NO_GPU, NO_ORT_GPU]


def test_errors_are_one_line_user_errors() -> None:
    with pytest.raises(UserError) as raised:
        check_backend("tensorrt", facts=CPU_BOX)
    message = str(raised.value)
    assert message.startswith("--backend tensorrt cannot run here: no CUDA GPU is visible")
    assert "\n" not in message
    with pytest.raises(UserError, match="^--backend onnxruntime --device cuda cannot run here: "):
        check_backend("onnxruntime", "cuda", facts=CPU_BOX)
    with pytest.raises(UserError, match="^build-engine cannot run here: "):
        check_backend("tensorrt", facts=CPU_BOX, action="build-engine")


def test_this_machine(fake_bundle: Path) -> None:
    """Here: what is really installed. The TensorRT backend refuses with the same one line."""
    facts = probe()
    assert facts.cuda_devices == cuda_device_count()
    problems = backend_problems("tensorrt", "cuda", facts)
    if not problems:
        pytest.skip("TensorRT, CUDA torch and a GPU are present: tests/runtime/backends/test_tensorrt_gpu.py runs")
    from edgevlm.runtime.backends.tensorrt import TensorRTBackend
    from edgevlm.runtime.bundle import load_bundle

    with pytest.raises(UserError) as raised:
        TensorRTBackend(load_bundle(fake_bundle))
    assert str(raised.value) == "--backend tensorrt cannot run here: " + "; ".join(problems)


def test_this_machine_onnxruntime_cuda() -> None:
    facts = probe()
    problems = backend_problems("onnxruntime", "cuda", facts)
    if not problems:
        pytest.skip("onnxruntime-gpu and a GPU are present")
    if facts.cuda_devices == 0:
        assert NO_GPU in problems
    if "CUDAExecutionProvider" not in facts.ort_providers:
        assert NO_ORT_GPU in problems
