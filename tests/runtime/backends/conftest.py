"""TensorRT-backend fixtures: a minimal bundle folder (a valid manifest, placeholder files) for the
parts that never open the graphs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "head_dim": 64, "vocab_size": 272,
    "vision": {"hidden_size": 192, "num_heads": 4, "depth": 4, "out_hidden_size": 256, "patch_size": 14,
               "temporal_patch_size": 2, "spatial_merge_size": 2, "position_table_side": 24},
}


def write_fake_bundle(root: Path, **limits: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": "edgevlm-bundle", "schema_version": 1, "dtype": "fp16",
        "architecture": ARCHITECTURE,
        "tokens": {"image_token_id": 1, "image_start_token_id": 2, "image_end_token_id": 3, "video_token_id": 4,
                   "eos_token_ids": [5], "pad_token_id": 0},
        "limits": {"max_batch": 16, "max_seq_len": 2048, "min_pixels": 25088, "max_pixels": 401408, **limits},
        "graphs": {"vision": {"file": "vision.onnx"}, "decoder": {"file": "decoder.onnx"}},
        "quantization": None,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    for name in ("vision.onnx", "decoder.onnx", "embed_tokens.npy", "tokenizer.json", "tokenizer_config.json"):
        (root / name).write_bytes(b"")
    return root


@pytest.fixture
def fake_bundle(tmp_path: Path) -> Path:
    return write_fake_bundle(tmp_path / "bundle")
