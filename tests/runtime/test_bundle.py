"""Bundle loading: a typed manifest, and clear errors for folders that are not usable bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevlm.runtime.bundle import BundleError, load_bundle

MANIFEST = {
    "format": "edgevlm-bundle",
    "schema_version": 1,
    "dtype": "fp32",
    "architecture": {
        "hidden_size": 8, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "head_dim": 4, "vocab_size": 10,
        "vision": {"hidden_size": 8, "num_heads": 2, "depth": 1, "out_hidden_size": 8, "patch_size": 14,
                   "temporal_patch_size": 2, "spatial_merge_size": 2, "position_table_side": 24},
    },
    "tokens": {"image_token_id": 1, "image_start_token_id": 2, "image_end_token_id": 3, "video_token_id": 4,
               "eos_token_ids": [0, 5], "pad_token_id": 0},
    "limits": {"max_batch": 4, "max_seq_len": 64, "min_pixels": 100, "max_pixels": 1000},
    "graphs": {"vision": {"file": "vision.onnx"}, "decoder": {"file": "decoder.onnx"}},
    "files": {"vision.onnx": {"sha256": "0" * 64, "bytes": 4}},
}


def make_bundle(root: Path, **changes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("vision.onnx", "decoder.onnx", "tokenizer.json", "tokenizer_config.json"):
        (root / name).write_bytes(b"fake")
    np.save(root / "embed_tokens.npy", np.zeros((10, 8), np.float32))
    (root / "manifest.json").write_text(json.dumps({**MANIFEST, **changes}))
    return root


def test_typed_manifest(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "b"))
    assert bundle.architecture.num_kv_heads == 1 and bundle.architecture.vision.patch_dim == 1176
    assert bundle.tokens.eos_token_ids == (0, 5)
    assert bundle.limits.max_seq_len == 64 and bundle.dtype == np.float32
    assert bundle.decoder_file == tmp_path / "b" / "decoder.onnx"


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"format": "other"}, "format"), ({"schema_version": 2}, "schema_version"), ({"dtype": "bf16"}, "dtype"),
     ({"limits": {"max_batch": 4}}, "max_seq_len")],
)
def test_bad_manifest(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        load_bundle(make_bundle(tmp_path / "b", **changes))


def test_missing_file_and_checksum(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    load_bundle(root)  # checksums are opt-in
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_bundle(root, verify_sha256=True)
    (root / "decoder.onnx").unlink()
    with pytest.raises(BundleError, match="missing file decoder.onnx"):
        load_bundle(root)


def test_cpu_forms_are_optional_and_checked(tmp_path: Path) -> None:
    assert load_bundle(make_bundle(tmp_path / "plain")).decoder_cpu_file is None
    graphs = {"vision": {"file": "vision.onnx"},
              "decoder": {"file": "decoder.onnx", "cpu_form": {"file": "decoder.cpu.onnx"}}}
    root = make_bundle(tmp_path / "int8", graphs=graphs)
    with pytest.raises(BundleError, match="missing file decoder.cpu.onnx"):
        load_bundle(root)
    (root / "decoder.cpu.onnx").write_bytes(b"fake")
    bundle = load_bundle(root)
    assert bundle.decoder_cpu_file == root / "decoder.cpu.onnx" and bundle.vision_cpu_file is None
