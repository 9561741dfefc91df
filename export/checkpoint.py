"""Reading a GLM-4V checkpoint folder: checked up front without torch, then loaded with it.

Every problem a user can fix (missing folder or files, a config that is not GLM-4V, a corrupt or
truncated safetensors file, missing weights) is a `UserError` with one clear line, raised before
anything is written.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevlm.errors import UserError

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("glm4v",)
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json")
PROCESSOR_FILES: tuple[str, ...] = ("processor_config.json", "preprocessor_config.json")
# Copied into the bundle when present: everything the processor and tokenizer read at serve time.
ASSET_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
)
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                           "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What the folder check found: the parsed config and the weight files with their sizes."""

    path: Path
    config: dict[str, Any]
    config_sha256: str
    weight_files: tuple[Path, ...]
    tensor_bytes: int


def read_config(model_dir: Path) -> tuple[dict[str, Any], str]:
    """config.json as a dict and its sha256; UserError if absent, unreadable or not GLM-4V."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{model_dir} has no config.json: not a Hugging Face checkpoint folder")
    raw = path.read_bytes()
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(
            f"unsupported architecture {model_type!r} in {path} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return config, hashlib.sha256(raw).hexdigest()


def safetensors_bytes(path: Path) -> int:
    """Check one safetensors file's header against its size; return the bytes of its tensors."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise UserError(f"corrupt safetensors file {path}: shorter than its 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise UserError(f"corrupt safetensors file {path}: header length {header_len} exceeds the file")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"corrupt safetensors file {path}: header is not JSON") from None
    total, end = 0, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = entry["data_offsets"]
            count = 1
            for dim in entry["shape"]:
                count *= dim
            expected = count * SAFETENSORS_DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"corrupt safetensors file {path}: bad header entry for {name!r}") from None
        if stop - begin != expected:
            raise UserError(f"corrupt safetensors file {path}: tensor {name!r} has the wrong byte length")
        total, end = total + expected, max(end, stop)
    if 8 + header_len + end != size:
        raise UserError(f"corrupt safetensors file {path}: {size} bytes on disk, header says {8 + header_len + end}")
    return total


def weight_files(model_dir: Path) -> tuple[Path, ...]:
    """The checkpoint's safetensors files (sharded through model.safetensors.index.json or single)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise UserError(f"{index} is not a valid safetensors index") from None
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise UserError(f"{model_dir} lacks weight shards listed in its index: {', '.join(missing)}")
        return tuple(model_dir / n for n in names)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir} has no *.safetensors weights (only safetensors checkpoints are supported)")
    return tuple(files)


def inspect_checkpoint(model_dir: Path) -> CheckpointInfo:
    """Check a checkpoint folder without loading it: config, weights' integrity, tokenizer files."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"model folder not found: {model_dir}")
    config, config_sha = read_config(model_dir)
    files = weight_files(model_dir)
    tensor_bytes = sum(safetensors_bytes(f) for f in files)
    missing = [n for n in TOKENIZER_FILES if not (model_dir / n).is_file()]
    if not any((model_dir / n).is_file() for n in PROCESSOR_FILES):
        missing.append(" or ".join(PROCESSOR_FILES))
    if missing:
        raise UserError(f"{model_dir} lacks {', '.join(missing)}: the bundle could not tokenize or preprocess")
    return CheckpointInfo(model_dir, config, config_sha, files, tensor_bytes)


def load_model(model_dir: Path, torch_dtype: Any) -> Any:
    """Glm4vForConditionalGeneration in eval mode, offline, refusing checkpoints with missing weights."""
    from safetensors import SafetensorError
    from transformers import Glm4vForConditionalGeneration
    from transformers.utils import logging as hf_logging

    # The export prints its own progress; HF's per-tensor loading bar would interleave with it.
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        loaded: Any = Glm4vForConditionalGeneration.from_pretrained(
            model_dir, dtype=torch_dtype, local_files_only=True, output_loading_info=True
        )
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"could not load the checkpoint in {model_dir}: {str(exc).splitlines()[0]}") from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    model, info = loaded
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise UserError(f"checkpoint {model_dir} lacks {len(missing)} weights ({shown})")
    return model.eval()
