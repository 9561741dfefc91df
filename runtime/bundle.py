"""Load and check a bundle folder (export/BUNDLE.md): the manifest, typed, plus the files it names.

Nothing is inferred from file names: every shape and id the runtime uses comes from manifest.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevlm.errors import UserError

FORMAT = "edgevlm-bundle"
SCHEMA_VERSION = 1
DTYPES: dict[str, np.dtype] = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16)}
# Files the runtime opens besides the graphs (the graphs come from manifest["graphs"]).
SERVE_FILES: tuple[str, ...] = ("embed_tokens.npy", "tokenizer.json", "tokenizer_config.json")


class BundleError(UserError):
    """The folder is not a usable bundle (missing file, wrong format, checksum mismatch)."""


@dataclass(frozen=True, slots=True)
class VisionArchitecture:
    hidden_size: int
    num_heads: int
    depth: int
    out_hidden_size: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    position_table_side: int

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch: 3 channels x temporal x patch x patch (1176 for GLM)."""
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size


@dataclass(frozen=True, slots=True)
class Architecture:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    vision: VisionArchitecture


@dataclass(frozen=True, slots=True)
class SpecialTokens:
    image_token_id: int
    image_start_token_id: int
    image_end_token_id: int
    video_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int


@dataclass(frozen=True, slots=True)
class BundleLimits:
    max_batch: int
    max_seq_len: int
    min_pixels: int
    max_pixels: int


@dataclass(frozen=True, slots=True)
class Bundle:
    path: Path
    dtype: np.dtype
    architecture: Architecture
    tokens: SpecialTokens
    limits: BundleLimits
    vision_file: Path
    decoder_file: Path
    manifest: dict[str, Any]

    vision_cpu_file: Path | None = None  # the int8 graphs' ONNX Runtime CPU form (calibration/cpu_form.py)
    decoder_cpu_file: Path | None = None

    @property
    def embed_entry(self) -> dict[str, Any]:
        """The manifest's `embed_tokens` entry (file, dtype, scales): see runtime/embed_table.py."""
        return self.manifest.get("embed_tokens") or {"file": "embed_tokens.npy"}


def load_bundle(path: str | Path, verify_sha256: bool = False) -> Bundle:
    """Read manifest.json, check the format and that every named file exists (and its sha256 when
    asked: hashing multi-GB weights takes seconds, so it is opt-in)."""
    root = Path(path)
    manifest = _read_manifest(root)
    files: dict[str, Any] = manifest.get("files", {})
    graphs = _require(manifest, "graphs")
    needed = [_require(graphs[name], "file") for name in ("vision", "decoder")] + list(SERVE_FILES)
    for name in needed + list(files):
        if not (root / name).is_file():
            raise BundleError(f"bundle {root}: missing file {name}")
    if verify_sha256:
        for name, entry in files.items():
            _verify_file(root / name, entry)
    return Bundle(
        path=root,
        dtype=_dtype(manifest),
        architecture=_architecture(_require(manifest, "architecture")),
        tokens=_tokens(_require(manifest, "tokens")),
        limits=_limits(_require(manifest, "limits")),
        vision_file=root / graphs["vision"]["file"],
        decoder_file=root / graphs["decoder"]["file"],
        manifest=manifest,
        vision_cpu_file=_cpu_form(root, graphs["vision"]),
        decoder_cpu_file=_cpu_form(root, graphs["decoder"]),
    )


def _cpu_form(root: Path, graph: dict[str, Any]) -> Path | None:
    form = graph.get("cpu_form")
    if not form:
        return None
    path = root / _require(form, "file")
    if not path.is_file():
        raise BundleError(f"bundle {root}: missing file {path.name}")
    return path


def _read_manifest(root: Path) -> dict[str, Any]:
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a bundle: no manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: invalid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path}: schema_version {manifest.get('schema_version')!r} is not supported "
            f"(this runtime reads {SCHEMA_VERSION})"
        )
    return manifest


def _require(section: dict[str, Any], key: str) -> Any:
    if key not in section:
        raise BundleError(f"manifest.json: missing field {key!r}")
    return section[key]


def _dtype(manifest: dict[str, Any]) -> np.dtype:
    name = _require(manifest, "dtype")
    if name not in DTYPES:
        raise BundleError(f"manifest.json: dtype {name!r} is not served by this runtime ({sorted(DTYPES)})")
    return DTYPES[name]


def _architecture(arch: dict[str, Any]) -> Architecture:
    vision = _require(arch, "vision")
    return Architecture(
        hidden_size=int(_require(arch, "hidden_size")),
        num_layers=int(_require(arch, "num_layers")),
        num_heads=int(_require(arch, "num_heads")),
        num_kv_heads=int(_require(arch, "num_kv_heads")),
        head_dim=int(_require(arch, "head_dim")),
        vocab_size=int(_require(arch, "vocab_size")),
        vision=VisionArchitecture(**{k: int(_require(vision, k)) for k in _fields(VisionArchitecture)}),
    )


def _tokens(tokens: dict[str, Any]) -> SpecialTokens:
    eos = _require(tokens, "eos_token_ids")
    return SpecialTokens(
        image_token_id=int(_require(tokens, "image_token_id")),
        image_start_token_id=int(_require(tokens, "image_start_token_id")),
        image_end_token_id=int(_require(tokens, "image_end_token_id")),
        video_token_id=int(_require(tokens, "video_token_id")),
        eos_token_ids=tuple(int(t) for t in (eos if isinstance(eos, list) else [eos])),
        pad_token_id=int(tokens.get("pad_token_id", 0)),
    )


def _limits(limits: dict[str, Any]) -> BundleLimits:
    return BundleLimits(**{k: int(_require(limits, k)) for k in _fields(BundleLimits)})


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _verify_file(path: Path, entry: dict[str, Any]) -> None:
    expected = entry.get("sha256")
    if expected is None:
        return
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise BundleError(f"bundle file {path.name}: sha256 mismatch (corrupt or modified)")
