"""Can the chosen backend run here? Facts are probed once (imports and the CUDA driver, no GPU
work), the verdict is pure: one line naming everything missing and how to get it.

The GPU is counted through the CUDA driver (libcuda's cuDeviceGetCount), not through torch or
onnxruntime, so a missing driver or a container started without `--gpus` reads as "no GPU", not as
a missing Python package.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from edgevlm.errors import UserError

NO_GPU = (
    "no CUDA GPU is visible (check the NVIDIA driver with nvidia-smi, "
    "or start the container with --gpus all / --runtime nvidia)"
)
NO_TENSORRT = (
    "the tensorrt Python package is missing (Jetson: it ships with JetPack, apt install python3-libnvinfer; "
    "x86: pip install tensorrt, or use the nvcr.io/nvidia/tensorrt image)"
)
JETSON_TORCH = "Jetson: NVIDIA's JetPack wheels"
NO_TORCH = f"PyTorch with CUDA is missing (it holds the device buffers and CUDA graphs; {JETSON_TORCH})"
NO_ORT_GPU = "onnxruntime has no CUDAExecutionProvider (replace onnxruntime with onnxruntime-gpu)"
NO_ORT_TRT = "onnxruntime has no TensorrtExecutionProvider (an onnxruntime-gpu build with TensorRT)"


@dataclass(frozen=True, slots=True)
class GpuFacts:
    cuda_devices: int  # from the CUDA driver; 0 without driver or device
    tensorrt: str | None  # version, None when not importable
    torch: str | None  # version, None when not importable
    torch_cuda: bool  # torch is a CUDA build
    onnxruntime: str | None
    ort_providers: tuple[str, ...]


def backend_problems(backend: str, device: str, facts: GpuFacts) -> list[str]:
    """What stops `backend` on `device` here (empty when nothing does)."""
    problems: list[str] = []
    wants_gpu = backend == "tensorrt" or device in ("cuda", "tensorrt")
    if wants_gpu and facts.cuda_devices == 0:
        problems.append(NO_GPU)
    if backend == "tensorrt":
        if facts.tensorrt is None:
            problems.append(NO_TENSORRT)
        if facts.torch is None:
            problems.append(NO_TORCH)
        elif not facts.torch_cuda:
            problems.append(f"PyTorch {facts.torch} is a CPU-only build (need a CUDA build; {JETSON_TORCH})")
    elif backend == "onnxruntime" and device in ("cuda", "tensorrt"):
        provider = "CUDAExecutionProvider" if device == "cuda" else "TensorrtExecutionProvider"
        if facts.onnxruntime is None:
            problems.append("onnxruntime is not installed (pip install onnxruntime-gpu)")
        elif provider not in facts.ort_providers:
            problems.append(NO_ORT_GPU if device == "cuda" else NO_ORT_TRT)
    return problems


def check_backend(backend: str, device: str = "cpu", facts: GpuFacts | None = None, action: str | None = None) -> None:
    """UserError, one line, when the backend cannot run here. `action` names what was asked
    (default: the backend options)."""
    problems = backend_problems(backend, device, facts if facts is not None else probe())
    if problems:
        what = action or f"--backend {backend}" + (f" --device {device}" if backend != "tensorrt" else "")
        raise UserError(f"{what} cannot run here: " + "; ".join(problems))


def probe() -> GpuFacts:
    torch_version, torch_cuda = _torch()
    ort_version, providers = _onnxruntime()
    return GpuFacts(
        cuda_devices=cuda_device_count(),
        tensorrt=_version_of("tensorrt"),
        torch=torch_version,
        torch_cuda=torch_cuda,
        onnxruntime=ort_version,
        ort_providers=providers,
    )


def cuda_device_count() -> int:
    """GPUs the CUDA driver reports; 0 when libcuda is absent or cuInit fails."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def _version_of(module: str) -> str | None:
    try:
        imported = __import__(module)
    except Exception:  # a broken install (missing libnvinfer) is as unusable as an absent one
        return None
    return str(getattr(imported, "__version__", "unknown"))


def _torch() -> tuple[str | None, bool]:
    try:
        import torch
    except ImportError:
        return None, False
    return str(torch.__version__), torch.version.cuda is not None


def _onnxruntime() -> tuple[str | None, tuple[str, ...]]:
    try:
        import onnxruntime
    except ImportError:
        return None, ()
    return str(onnxruntime.__version__), tuple(onnxruntime.get_available_providers())
