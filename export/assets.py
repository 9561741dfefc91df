"""The bundle's non-graph files: tokenizer/processor files copied over, and the embedding table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgevlm.export.checkpoint import ASSET_FILES

EMBED_FILE = "embed_tokens.npy"


def copy_assets(model_dir: Path, bundle_dir: Path) -> list[str]:
    """Copy the tokenizer, processor, chat template and generation config files that exist."""
    copied = []
    for name in ASSET_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, bundle_dir / name)
            copied.append(name)
    return copied


def read_generation_config(model_dir: Path) -> dict[str, Any]:
    """generation_config.json as a dict ({} when absent)."""
    path = model_dir / "generation_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def pixel_limits(image_processor: Any) -> tuple[int, int]:
    """(min_pixels, max_pixels) of GLM's image processor (pixels x 2 temporal frames)."""
    size = getattr(image_processor, "size", None) or {}
    low = size.get("shortest_edge", getattr(image_processor, "min_pixels", None))
    high = size.get("longest_edge", getattr(image_processor, "max_pixels", None))
    if low is None or high is None:
        raise ValueError(f"the image processor has no min/max pixels (size={size})")
    return int(low), int(high)


def write_embed_tokens(weight: Any, bundle_dir: Path) -> dict[str, Any]:
    """Save the token embedding table [vocab, hidden] for numpy gathers at serve time.

    numpy has no bfloat16: a bf16 table is stored as its raw 16-bit patterns (uint16); the
    manifest says so (`storage`), and `(bits.astype(uint32) << 16).view(float32)` widens it."""
    import torch

    # weight: [vocab, hidden]
    table = weight.detach()
    if table.dtype == torch.bfloat16:
        array, dtype = table.view(torch.int16).numpy().view(np.uint16), "bfloat16"
    else:
        array = table.numpy()
        dtype = str(array.dtype)
    np.save(bundle_dir / EMBED_FILE, array, allow_pickle=False)
    return {"file": EMBED_FILE, "shape": list(array.shape), "dtype": dtype, "storage": str(array.dtype)}
