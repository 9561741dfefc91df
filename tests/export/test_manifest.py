"""manifest.json of the exported demo bundle: the schema of BUNDLE.md, filled from the checkpoint."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevlm.export.manifest import check_manifest, sha256_file


def test_header_and_source(manifest: dict[str, Any], demo_checkpoint: Path) -> None:
    check_manifest(manifest)
    assert manifest["format"] == "edgevlm-bundle" and manifest["schema_version"] == 1
    assert manifest["dtype"] == "fp32" and manifest["opset"] == 18
    config_text = (demo_checkpoint / "config.json").read_bytes()
    assert manifest["source"]["config"] == json.loads(config_text)
    assert manifest["source"]["config_sha256"] == sha256_file(demo_checkpoint / "config.json")
    assert manifest["source"]["model_type"] == "glm4v"
    assert set(manifest["tool_versions"]) >= {"edgevlm", "torch", "transformers", "onnx", "onnxruntime"}
    assert manifest["quantization"] is None


def test_architecture(manifest: dict[str, Any], demo_checkpoint: Path) -> None:
    text = json.loads((demo_checkpoint / "config.json").read_text())["text_config"]
    arch = manifest["architecture"]
    assert arch["hidden_size"] == text["hidden_size"] and arch["num_layers"] == text["num_hidden_layers"]
    assert arch["num_kv_heads"] == text["num_key_value_heads"]
    assert arch["head_dim"] == text["hidden_size"] // text["num_attention_heads"]
    assert arch["mrope_section"] == text["rope_parameters"]["mrope_section"]
    assert arch["rotary_dim"] == arch["head_dim"] // 2
    assert arch["vision"]["patch_dim"] == 1176 and arch["vision"]["position_table_side"] == 24


def test_tokens(manifest: dict[str, Any], demo_checkpoint: Path) -> None:
    vocab = json.loads((demo_checkpoint / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    tokens = manifest["tokens"]
    assert tokens["image_token_id"] == ids["<|image|>"]
    assert tokens["box_start_token_id"] == ids["<|begin_of_box|>"]
    assert tokens["box_end_token_id"] == ids["<|end_of_box|>"]
    generation = json.loads((demo_checkpoint / "generation_config.json").read_text())
    assert tokens["eos_token_ids"] == generation["eos_token_id"]
    assert ids["<|endoftext|>"] in tokens["eos_token_ids"]


def test_limits_come_from_options_and_processor(manifest: dict[str, Any]) -> None:
    from edgevlm.demo.checkpoint import MAX_PIXELS, MIN_PIXELS

    assert manifest["limits"] == {"max_batch": 4, "max_seq_len": 1024, "min_pixels": MIN_PIXELS,
                                  "max_pixels": MAX_PIXELS}


def test_files_are_listed_with_true_hashes(manifest: dict[str, Any], bundle_dir: Path) -> None:
    on_disk = {p.name for p in bundle_dir.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert {"vision.onnx", "vision.onnx.data", "decoder.onnx", "decoder.onnx.data", "embed_tokens.npy",
            "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json"} <= on_disk
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (bundle_dir / name).stat().st_size
        assert entry["sha256"] == sha256_file(bundle_dir / name)


def test_graph_signatures_are_the_contract(manifest: dict[str, Any]) -> None:
    vision = manifest["graphs"]["vision"]
    assert vision["external_data"] == "vision.onnx.data"
    assert vision["inputs"] == {
        "pixel_values": {"shape": ["num_patches", 1176], "dtype": "float32"},
        "pos_grid": {"shape": ["num_patches", 2], "dtype": "float32"},
        "rotary_pos": {"shape": ["num_patches", 2], "dtype": "int64"},
        "attention_bias": {"shape": ["num_patches", "num_patches"], "dtype": "float32"},
    }
    assert vision["outputs"] == {"image_embeds": {"shape": ["num_image_tokens", 256], "dtype": "float32"}}
    decoder = manifest["graphs"]["decoder"]
    layers = manifest["architecture"]["num_layers"]
    # Graph inputs are bound by name; the manifest stores them with sorted keys.
    assert {"inputs_embeds", "position_ids", "attention_bias", "logits_index"} <= set(decoder["inputs"])
    assert decoder["inputs"]["attention_bias"] == {"shape": ["batch", 1, "seq", "total_len"], "dtype": "float32"}
    assert decoder["inputs"]["position_ids"] == {"shape": [3, "batch", "seq"], "dtype": "int64"}
    assert decoder["inputs"][f"past_key_{layers - 1}"] == {"shape": ["batch", 2, "max_len", 64], "dtype": "float32"}
    assert decoder["outputs"]["logits"] == {"shape": ["batch", 272], "dtype": "float32"}
    assert decoder["outputs"][f"present_value_{layers - 1}"]["shape"] == ["batch", 2, "seq", 64]
    assert len(decoder["inputs"]) == 4 + 2 * layers and len(decoder["outputs"]) == 1 + 2 * layers


def test_embed_tokens(manifest: dict[str, Any], bundle_dir: Path, hf_model: Any) -> None:
    entry = manifest["embed_tokens"]
    table = np.load(bundle_dir / entry["file"], mmap_mode="r")
    assert list(table.shape) == entry["shape"] and entry["dtype"] == entry["storage"] == "float32"
    np.testing.assert_array_equal(table, hf_model.model.language_model.embed_tokens.weight.detach().numpy())


def test_validation_and_export_records(manifest: dict[str, Any]) -> None:
    validation = manifest["validation"]
    assert validation["skipped"] is False and validation["greedy_identical"] is True
    assert validation["greedy_tokens"] == 32 and validation["tolerance_rel"] == 1e-4
    assert validation["logits_max_rel"] <= 1e-4 and validation["vision_max_rel"] <= 1e-4
    assert manifest["export"]["peak_rss_bytes"] > 0
    assert set(manifest["export"]["stage_seconds"]) == {"load", "trace", "convert", "optimise", "validate"}


@pytest.mark.parametrize(("path", "value", "message"), [
    (("format",), "other", "format/schema_version"),
    (("dtype",), "int3", "manifest dtype"),
    (("tokens", "eos_token_ids"), [], "eos_token_ids"),
    (("limits", "max_batch"), 0, "limits.max_batch"),
])
def test_check_manifest_names_the_broken_key(manifest: dict[str, Any], path: tuple, value: Any,
                                             message: str) -> None:
    broken = copy.deepcopy(manifest)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        check_manifest(broken)
    del broken["files"]
    with pytest.raises(ValueError, match="lacks 'files'"):
        check_manifest(broken)
