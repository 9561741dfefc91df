"""Every TensorRT runtime call edgevlm makes, in one small file (the build calls are in
export/tensorrt_build.py). Written against the TensorRT 10.x/11.x Python API: name-based I/O
tensors (no binding indices), `set_input_shape` / `set_tensor_address` / `execute_async_v3`, one
CUDA stream passed as an integer handle. Nothing here differs between 10.x and 11.x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevlm.runtime.backends.trt_compat import EngineIncompatible

# TensorRT data type name -> torch dtype name (torch resolves them: `getattr(torch, name)`).
TORCH_DTYPE_NAMES: dict[str, str] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT64": "int64",
    "INT32": "int32",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}

_LOGGER: Any = None


def tensorrt_module() -> Any:
    import tensorrt

    return tensorrt


def logger() -> Any:
    """One process-wide logger: TensorRT expects the same ILogger for all its objects."""
    global _LOGGER
    if _LOGGER is None:
        trt = tensorrt_module()
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    is_input: bool
    dtype: str  # torch dtype name


class LoadedEngine:
    """A deserialized engine. The runtime object must outlive the engine, so it is kept."""

    def __init__(self, path: Path, rebuild_command: str) -> None:
        trt = tensorrt_module()
        self.path = path
        self._runtime = trt.Runtime(logger())
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineIncompatible(
                f"TensorRT could not load {path} (see its log above): rebuild it with `{rebuild_command}`"
            )

    def tensors(self) -> dict[str, TensorInfo]:
        trt = tensorrt_module()
        infos = {}
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            kind = self.engine.get_tensor_dtype(name).name
            if kind not in TORCH_DTYPE_NAMES:
                raise EngineIncompatible(f"{self.path}: tensor {name} has unsupported type {kind}")
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            infos[name] = TensorInfo(name, is_input, TORCH_DTYPE_NAMES[kind])
        return infos

    def context(self, profile_index: int, stream_handle: int) -> Context:
        """A context on one optimization profile. Its activation memory is allocated for that
        profile only (ON_PROFILE_CHANGE), not for the largest profile of the engine."""
        trt = tensorrt_module()
        context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE)
        if context is None:
            raise MemoryError(f"TensorRT could not create an execution context for {self.path.name}")
        if not context.set_optimization_profile_async(profile_index, stream_handle):
            raise RuntimeError(f"TensorRT refused optimization profile {profile_index} of {self.path.name}")
        return Context(context, self.path.name)


class Context:
    def __init__(self, context: Any, engine_name: str) -> None:
        self._context = context
        self._engine_name = engine_name

    def set_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for name, shape in shapes.items():
            if not self._context.set_input_shape(name, shape):
                raise ValueError(f"{self._engine_name}: shape {shape} of {name} is outside the engine's profile")

    def set_addresses(self, addresses: dict[str, int]) -> None:
        for name, address in addresses.items():
            if not self._context.set_tensor_address(name, address):
                raise RuntimeError(f"{self._engine_name}: TensorRT refused the buffer of {name}")

    def run(self, stream_handle: int) -> None:
        """Enqueue on the stream; returns before the GPU is done."""
        if not self._context.execute_async_v3(stream_handle):
            raise RuntimeError(f"{self._engine_name}: TensorRT execution failed (see its log above)")

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._context.get_tensor_shape(name))
