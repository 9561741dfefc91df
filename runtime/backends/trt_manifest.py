"""The engine folder's manifest: which bundle, TensorRT release and GPU the engines were built for,
with the optimization profiles and build flags (written by `edgevlm build-engine`, read by the
TensorRT backend). Pure Python.

Layout (default `<bundle>/engines/`): `manifest.json`, `vision.plan`, `decoder.plan`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevlm.errors import UserError
from edgevlm.export.engine_profiles import EngineLimits, Profile
from edgevlm.runtime.backends.trt_compat import BuildTarget

FORMAT = "edgevlm-engines"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_SUBDIR = "engines"


class EngineManifestError(UserError):
    """The engine folder is missing, unreadable or belongs to another bundle."""


@dataclass(frozen=True, slots=True)
class EngineFile:
    file: str
    bytes: int
    sha256: str
    profiles: tuple[Profile, ...]

    def profile_index(self, name: str) -> int:
        for index, profile in enumerate(self.profiles):
            if profile.name == name:
                return index
        raise KeyError(f"engine {self.file} has no {name!r} profile")

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "profiles": [p.to_json() for p in self.profiles],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineFile:
        return cls(
            file=str(data["file"]),
            bytes=int(data["bytes"]),
            sha256=str(data["sha256"]),
            profiles=tuple(Profile.from_json(p) for p in data["profiles"]),
        )


@dataclass(frozen=True, slots=True)
class EngineManifest:
    target: BuildTarget
    bundle_manifest_sha256: str
    limits: EngineLimits
    build: dict[str, Any]
    vision: EngineFile
    decoder: EngineFile
    created: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "bundle_manifest_sha256": self.bundle_manifest_sha256,
            "target": self.target.to_json(),
            "limits": self.limits.to_json(),
            "build": self.build,
            "engines": {"vision": self.vision.to_json(), "decoder": self.decoder.to_json()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineManifest:
        engines = data["engines"]
        return cls(
            target=BuildTarget.from_json(data["target"]),
            bundle_manifest_sha256=str(data["bundle_manifest_sha256"]),
            limits=EngineLimits(**data["limits"]),
            build=dict(data["build"]),
            vision=EngineFile.from_json(engines["vision"]),
            decoder=EngineFile.from_json(engines["decoder"]),
            created=str(data["created"]),
        )


def default_engine_dir(bundle_dir: Path) -> Path:
    return Path(bundle_dir) / DEFAULT_SUBDIR


def manifest_digest(bundle_dir: Path) -> str:
    """sha256 of the bundle's manifest.json: engines belong to exactly one export."""
    return hashlib.sha256((Path(bundle_dir) / "manifest.json").read_bytes()).hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_engine_manifest(engine_dir: Path, manifest: EngineManifest) -> Path:
    path = Path(engine_dir) / MANIFEST
    path.write_text(json.dumps(manifest.to_json(), indent=1) + "\n")
    return path


def read_engine_manifest(engine_dir: Path, bundle_dir: Path, rebuild_command: str) -> EngineManifest:
    """The engine manifest, checked to belong to this bundle and to name existing engine files."""
    engine_dir = Path(engine_dir)
    path = engine_dir / MANIFEST
    if not path.is_file():
        raise EngineManifestError(f"no TensorRT engines in {engine_dir}: build them with `{rebuild_command}`")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or data.get("schema_version") != SCHEMA_VERSION:
            raise EngineManifestError(
                f"{path}: not an edgevlm engine manifest (schema {SCHEMA_VERSION}): "
                f"rebuild with `{rebuild_command}`"
            )
        manifest = EngineManifest.from_json(data)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise EngineManifestError(
            f"{path}: unreadable engine manifest ({exc}): rebuild with `{rebuild_command}`"
        ) from exc
    if manifest.bundle_manifest_sha256 != manifest_digest(bundle_dir):
        raise EngineManifestError(
            f"the engines in {engine_dir} were built from another export of the bundle: "
            f"rebuild with `{rebuild_command}`"
        )
    for engine in (manifest.vision, manifest.decoder):
        if not (engine_dir / engine.file).is_file():
            raise EngineManifestError(
                f"{engine_dir}: missing engine file {engine.file}: rebuild with `{rebuild_command}`"
            )
    return manifest
