"""manifest.json: everything the runtime needs to know about a bundle (schema in BUNDLE.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT = "edgevlm-bundle"
SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOOLS: tuple[str, ...] = ("edgevlm", "torch", "transformers", "onnx", "onnxruntime", "onnxscript")
REQUIRED_KEYS: tuple[str, ...] = (
    "format", "schema_version", "created", "tool_versions", "source", "dtype", "opset", "architecture",
    "tokens", "limits", "graphs", "embed_tokens", "files", "quantization", "validation",
)
ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 9: "bool"}
NUMPY_DTYPE_OF = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in chunks (bundles hold multi-GB files)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entries(bundle_dir: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{file name: {sha256, bytes}} for the bundle's files."""
    return {
        name: {"sha256": sha256_file(bundle_dir / name), "bytes": (bundle_dir / name).stat().st_size}
        for name in sorted(names)
    }


def graph_signature(path: Path) -> dict[str, Any]:
    """A graph's inputs and outputs as written: {name: {shape: [dim name | size], dtype}}."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Iterable[Any]) -> dict[str, Any]:
        out = {}
        for value in values:
            tensor = value.type.tensor_type
            shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
            out[value.name] = {"shape": shape, "dtype": ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type))}
        return out

    data = path.name + ".data"
    return {
        "file": path.name,
        "external_data": data if (path.parent / data).exists() else None,
        "inputs": describe(model.graph.input),
        "outputs": describe(model.graph.output),
    }


def architecture(config: Any) -> dict[str, Any]:
    """The numbers the runtime sizes buffers and positions with, from a `Glm4vConfig`."""
    text, vision = config.text_config, config.vision_config
    rope = dict(text.rope_parameters or {})
    head_dim = text.hidden_size // text.num_attention_heads
    partial = float(rope.get("partial_rotary_factor", 1.0))
    return {
        "hidden_size": text.hidden_size,
        "num_layers": text.num_hidden_layers,
        "num_heads": text.num_attention_heads,
        "num_kv_heads": text.num_key_value_heads,
        "head_dim": head_dim,
        "vocab_size": text.vocab_size,
        "rope_theta": float(rope.get("rope_theta", 10000.0)),
        "partial_rotary_factor": partial,
        "rotary_dim": int(head_dim * partial),
        "mrope_section": list(rope.get("mrope_section", [8, 12, 12])),
        "rms_norm_eps": text.rms_norm_eps,
        "max_position_embeddings": text.max_position_embeddings,
        "vision": {
            "hidden_size": vision.hidden_size,
            "num_heads": vision.num_heads,
            "depth": vision.depth,
            "out_hidden_size": vision.out_hidden_size,
            "patch_size": vision.patch_size,
            "temporal_patch_size": vision.temporal_patch_size,
            "spatial_merge_size": vision.spatial_merge_size,
            "in_channels": vision.in_channels,
            "patch_dim": vision.in_channels * vision.temporal_patch_size * vision.patch_size**2,
            "position_table_side": vision.image_size // vision.patch_size,
        },
    }


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def token_ids(config: Any, generation: Mapping[str, Any], vocab: Mapping[str, int]) -> dict[str, Any]:
    """Special token ids: image/video from the config, box from the tokenizer, EOS and pad from the
    generation config (falling back to the text config; pad then to the first EOS)."""
    eos = _as_list(generation.get("eos_token_id")) or _as_list(getattr(config.text_config, "eos_token_id", None))
    pad = generation.get("pad_token_id", getattr(config.text_config, "pad_token_id", None))
    if pad is None and eos:
        pad = eos[0]  # padding is always masked out; any real id serves
    return {
        "image_token_id": config.image_token_id,
        "image_start_token_id": config.image_start_token_id,
        "image_end_token_id": config.image_end_token_id,
        "video_token_id": config.video_token_id,
        "video_start_token_id": config.video_start_token_id,
        "video_end_token_id": config.video_end_token_id,
        "box_start_token_id": vocab.get("<|begin_of_box|>"),
        "box_end_token_id": vocab.get("<|end_of_box|>"),
        "eos_token_ids": eos,
        "pad_token_id": pad,
    }


def tool_versions() -> dict[str, str | None]:
    """Installed versions of the tools that made the bundle."""
    versions: dict[str, str | None] = {}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_manifest(manifest: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first key that breaks the schema."""
    for key in REQUIRED_KEYS:
        if key not in manifest:
            raise ValueError(f"manifest lacks {key!r}")
    if manifest["format"] != FORMAT or manifest["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"manifest format/schema_version must be {FORMAT}/{SCHEMA_VERSION}")
    if manifest["dtype"] not in NUMPY_DTYPE_OF:
        raise ValueError(f"manifest dtype must be one of {sorted(NUMPY_DTYPE_OF)}, got {manifest['dtype']!r}")
    for graph in ("vision", "decoder"):
        entry = manifest["graphs"].get(graph)
        if not entry or entry["file"] not in manifest["files"]:
            raise ValueError(f"manifest graphs.{graph} is missing or its file is not listed in files")
    if not manifest["tokens"]["eos_token_ids"]:
        raise ValueError("manifest tokens.eos_token_ids is empty")
    for key in ("max_batch", "max_seq_len", "min_pixels", "max_pixels"):
        if not isinstance(manifest["limits"].get(key), int) or manifest["limits"][key] < 1:
            raise ValueError(f"manifest limits.{key} must be a positive integer")


def write_manifest(bundle_dir: Path, manifest: Mapping[str, Any]) -> Path:
    """Check and write manifest.json (sorted keys for stable diffs)."""
    check_manifest(manifest)
    path = bundle_dir / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
