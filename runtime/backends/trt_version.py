"""Everything that differs between the TensorRT major versions edgevlm supports, in one table.

TensorRT 10.x (Jetson Orin, JetPack 6) and 11.x (Jetson Thor / JetPack 7, current x86) share one
code path: name-based I/O tensors, `build_serialized_network`, `execute_async_v3`, Q/DQ-only
quantization, no precision builder flags. What is left to differ is listed here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgevlm.errors import UserError

MIN_MAJOR = 10


@dataclass(frozen=True, slots=True)
class TrtVersion:
    major: int
    minor: int
    patch: int
    text: str

    @property
    def release(self) -> tuple[int, int, int]:
        """Engines are portable only within one release (major.minor.patch); the build number,
        a 4th component, does not matter."""
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class TrtQuirks:
    """Per-major differences. `network_flags`: `NetworkDefinitionCreationFlag` member names to set.
    TensorRT 10 builds a strongly typed network only when asked (STRONGLY_TYPED); TensorRT 11 is
    always strongly typed and deprecates the flag, so asking again only earns a warning."""

    network_flags: tuple[str, ...]


QUIRKS: dict[int, TrtQuirks] = {
    10: TrtQuirks(network_flags=("STRONGLY_TYPED",)),
    11: TrtQuirks(network_flags=()),
}


def parse_version(text: str) -> TrtVersion:
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if match is None:
        raise ValueError(f"not a TensorRT version: {text!r}")
    major, minor, patch = (int(g) if g is not None else 0 for g in match.groups())
    return TrtVersion(major, minor, patch, text.strip())


def quirks_for(version: TrtVersion) -> TrtQuirks:
    """The table row for this version; versions newer than the table use its newest row (the
    11.x rules: strong typing only), older than 10 are refused."""
    if version.major < MIN_MAJOR:
        raise UserError(f"TensorRT {version} is too old: edgevlm needs TensorRT {MIN_MAJOR}.x or newer")
    return QUIRKS.get(version.major, QUIRKS[max(QUIRKS)])
