"""The CUDA device as torch sees it: identity (for engine compatibility), memory, bandwidth.

Imports torch lazily; every function here needs a CUDA device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from edgevlm.runtime.backends.trt_compat import BuildTarget


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]
    total_bytes: int
    multiprocessors: int

    def target(self, tensorrt_version: str) -> BuildTarget:
        return BuildTarget(tensorrt_version, self.name, self.compute_capability)


def torch_device(device: str) -> Any:
    """'cuda' / 'cuda:N' -> torch.device; anything else is a ValueError naming the option."""
    import torch

    if device != "cuda" and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'cuda' or 'cuda:N' for the TensorRT backend, got {device!r}")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device("cuda", index)


def device_info(device: Any) -> DeviceInfo:
    import torch

    props = torch.cuda.get_device_properties(device)
    return DeviceInfo(
        index=device.index or 0,
        name=str(props.name),
        compute_capability=(int(props.major), int(props.minor)),
        total_bytes=int(props.total_memory),
        multiprocessors=int(props.multi_processor_count),
    )


def memory_info(device: Any) -> tuple[int, int]:
    """(free, total) bytes from the driver. Memory torch has cached but not handed out counts as
    used here, so callers release the cache first when they size from it."""
    import torch

    free, total = torch.cuda.mem_get_info(device)
    return int(free), int(total)


def copy_bandwidth(device: Any, megabytes: int = 256, repeats: int = 10) -> float:
    """Achieved device-memory bandwidth in bytes/s: a device-to-device copy reads and writes every
    byte, so it moves 2x its size. The best of `repeats` runs (the others include warm-up)."""
    import torch

    count = megabytes * (1 << 20) // 2
    src = torch.empty(count, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best
