"""Whether engines built on one machine can run on this one (pure Python, no tensorrt import).

A TensorRT engine holds kernels chosen for one GPU architecture by one TensorRT release. edgevlm
builds neither hardware- nor version-compatible engines (both cost speed), so the rule is strict:
same TensorRT release and same compute capability. Another GPU model of the same compute
capability runs the engine (TensorRT allows it; the tactics may be slower), so it is not refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgevlm.errors import UserError
from edgevlm.runtime.backends.trt_version import parse_version


class EngineIncompatible(UserError):
    """The engines were built for another TensorRT release or GPU: rebuild them here."""


@dataclass(frozen=True, slots=True)
class BuildTarget:
    """Where engines were built (from the engine manifest) or would run (this machine)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]

    def __post_init__(self) -> None:
        parse_version(self.tensorrt_version)
        if len(self.compute_capability) != 2 or min(self.compute_capability) < 0:
            raise ValueError(f"compute_capability must be (major, minor), got {self.compute_capability}")

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} ({self.sm})"

    def to_json(self) -> dict[str, Any]:
        return {
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildTarget:
        major, minor = data["compute_capability"]
        return cls(str(data["tensorrt_version"]), str(data["gpu_name"]), (int(major), int(minor)))


def incompatibility(built: BuildTarget, here: BuildTarget) -> str | None:
    """Why engines built for `built` cannot run `here`, or None when they can."""
    built_release = parse_version(built.tensorrt_version).release
    here_release = parse_version(here.tensorrt_version).release
    if built_release != here_release:
        return f"built with TensorRT {built.tensorrt_version}, this machine has {here.tensorrt_version}"
    if built.compute_capability != here.compute_capability:
        return f"built for {built.gpu_name} ({built.sm}), this GPU is {here.gpu_name} ({here.sm})"
    return None


def check_compatible(built: BuildTarget, here: BuildTarget, rebuild_command: str) -> None:
    """Raise EngineIncompatible, one line ending in the command that fixes it."""
    reason = incompatibility(built, here)
    if reason is not None:
        raise EngineIncompatible(f"the TensorRT engines were {reason}: rebuild them with `{rebuild_command}`")
