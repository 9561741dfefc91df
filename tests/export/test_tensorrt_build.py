"""`edgevlm build-engine` without TensorRT: optimization profiles from the manifest limits, the build
plan, the CLI's help and one-line errors. Building itself is in tests/runtime/backends/test_tensorrt_gpu.py."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from edgevlm.cli import main
from edgevlm.export.engine_profiles import (
    DECODER_PROFILE_ORDER,
    DimRange,
    EngineLimits,
    Profile,
    ShapeRange,
    decoder_profiles,
    patch_range,
    vision_profile,
)
from edgevlm.runtime.bundle import Architecture, BundleLimits, VisionArchitecture

GLM_VISION = VisionArchitecture(1536, 12, 24, 4096, 14, 2, 2, 24)
GLM_FLASH = Architecture(4096, 40, 32, 2, 128, 151552, GLM_VISION)
GLM_LIMITS = BundleLimits(max_batch=16, max_seq_len=8192, min_pixels=25088, max_pixels=401408)


def limits(**overrides: Any) -> EngineLimits:
    return EngineLimits.from_bundle(GLM_LIMITS, **overrides)


# -- profiles ------------------------------------------------------------------------------------
def test_decoder_profiles_cover_prefill_then_decode() -> None:
    prefill, decode = decoder_profiles(GLM_FLASH, limits(prefill_chunk=512, opt_batch=4))
    assert (prefill.name, decode.name) == DECODER_PROFILE_ORDER
    assert prefill.shapes["inputs_embeds"] == ShapeRange((1, 1, 4096), (1, 512, 4096), (16, 512, 4096))
    assert prefill.shapes["attention_bias"] == ShapeRange((1, 1, 1, 1), (1, 1, 512, 512), (16, 1, 512, 8192))
    assert decode.shapes["inputs_embeds"] == ShapeRange((1, 1, 4096), (4, 1, 4096), (16, 1, 4096))
    assert decode.shapes["position_ids"] == ShapeRange((3, 1, 1), (3, 4, 1), (3, 16, 1))
    assert decode.shapes["attention_bias"] == ShapeRange((1, 1, 1, 1), (4, 1, 1, 4096), (16, 1, 1, 8192))
    assert decode.shapes["logits_index"] == ShapeRange((1,), (4,), (16,))
    # Cache rows are bound whole: [batch, kv_heads, max_len, head_dim], any max_len up to the limit.
    assert decode.shapes["past_value_39"] == ShapeRange((1, 2, 1, 128), (4, 2, 8192, 128), (16, 2, 8192, 128))
    assert len(prefill.shapes) == len(decode.shapes) == 4 + 2 * 40


def test_every_decode_step_shape_lies_in_the_decode_profile() -> None:
    _, decode = decoder_profiles(GLM_FLASH, limits())
    for batch, past in ((1, 0), (16, 8191), (7, 100)):
        shapes = {
            "inputs_embeds": (batch, 1, 4096),
            "position_ids": (3, batch, 1),
            "attention_bias": (batch, 1, 1, past + 1),
            "logits_index": (batch,),
            **{f"past_{kv}_{i}": (batch, 2, 8192, 128) for kv in ("key", "value") for i in range(40)},
        }
        assert decode.admits(shapes)
    assert not decode.admits({"attention_bias": (1, 1, 1, 8193)})
    assert not decode.admits({"inputs_embeds": (1, 2, 4096)})


def test_static_and_named_dims_from_the_manifest() -> None:
    inputs = {name: {"shape": shape} for name, shape in {
        "inputs_embeds": ["batch", "seq", 4096],
        "position_ids": [3, "batch", "seq"],
        "attention_bias": ["batch", 1, "seq", "total_len"],
        "logits_index": ["batch"],
    }.items()}
    for i in range(40):
        inputs[f"past_key_{i}"] = inputs[f"past_value_{i}"] = {"shape": ["batch", 2, 4096, 128]}
    prefill, _ = decoder_profiles(GLM_FLASH, limits(), inputs)
    assert prefill.shapes["past_key_0"] == ShapeRange((1, 2, 4096, 128), (1, 2, 4096, 128), (16, 2, 4096, 128))
    inputs["inputs_embeds"] = {"shape": ["batch", "seq", 2048]}
    with pytest.raises(ValueError, match="inputs_embeds: manifest dim 2048, the architecture says 4096"):
        decoder_profiles(GLM_FLASH, limits(), inputs)
    del inputs["logits_index"]
    with pytest.raises(ValueError, match=r"missing \['logits_index'\]"):
        decoder_profiles(GLM_FLASH, limits(), inputs)


def test_patch_range_follows_glm_min_max_pixels() -> None:
    # 25088 / (2 x 14 x 14) = 64 patches; 401408 / 392 = 1024 patches.
    assert patch_range(GLM_VISION, limits()) == DimRange(64, 1024, 1024)
    assert patch_range(GLM_VISION, limits(vision_max_images=4)) == DimRange(64, 1024, 4096)
    profile = vision_profile(GLM_VISION, limits())
    assert profile.shapes["pixel_values"] == ShapeRange((64, 1176), (1024, 1176), (1024, 1176))
    assert profile.shapes["attention_bias"] == ShapeRange((64, 64), (1024, 1024), (1024, 1024))


def test_patch_range_holds_every_image_the_processor_makes() -> None:
    from transformers.models.glm4v.image_processing_pil_glm4v import smart_resize

    lo, hi = patch_range(GLM_VISION, limits()).min, patch_range(GLM_VISION, limits()).max
    rng = random.Random(0)
    for _ in range(500):
        height, width = rng.randint(28, 4000), rng.randint(28, 4000)
        if max(height, width) / min(height, width) > 150:
            continue
        h, w = smart_resize(2, height, width, factor=28, min_pixels=25088, max_pixels=401408)
        patches = h * w // 196
        assert lo <= patches <= hi, (height, width, h, w)
        assert patches % 4 == 0


def test_engine_limits_name_the_bad_field() -> None:
    with pytest.raises(ValueError, match=r"max_batch must be in \[1, 16\]"):
        limits(max_batch=32)
    with pytest.raises(ValueError, match=r"max_seq_len must be in \[1, 8192\]"):
        limits(max_seq_len=0)
    with pytest.raises(ValueError, match="opt_batch must be <= max_batch"):
        limits(max_batch=4, opt_batch=8)
    with pytest.raises(ValueError, match="prefill_chunk must be <= max_seq_len"):
        limits(max_seq_len=256, prefill_chunk=512)
    assert limits(max_seq_len=256).prefill_chunk == 256
    assert limits().opt_batch == 8


def test_profiles_round_trip_through_json() -> None:
    for profile in (*decoder_profiles(GLM_FLASH, limits()), vision_profile(GLM_VISION, limits())):
        assert Profile.from_json(json.loads(json.dumps(profile.to_json()))) == profile


def test_shape_ranges_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        DimRange(4, 2, 8)


# -- build plan and CLI ----------------------------------------------------------------------------
def write_bundle(root: Path, **limit_overrides: int) -> Path:
    root.mkdir(parents=True)
    vision = {"hidden_size": 192, "num_heads": 4, "depth": 4, "out_hidden_size": 256, "patch_size": 14,
              "temporal_patch_size": 2, "spatial_merge_size": 2, "position_table_side": 24}
    manifest = {
        "format": "edgevlm-bundle", "schema_version": 1, "dtype": "fp16",
        "architecture": {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "head_dim": 64,
                         "vocab_size": 272, "vision": vision},
        "tokens": {"image_token_id": 1, "image_start_token_id": 2, "image_end_token_id": 3, "video_token_id": 4,
                   "eos_token_ids": [5]},
        "limits": {"max_batch": 16, "max_seq_len": 2048, "min_pixels": 25088, "max_pixels": 401408,
                   **limit_overrides},
        "graphs": {"vision": {"file": "vision.onnx"}, "decoder": {"file": "decoder.onnx"}},
        "quantization": None,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    for name in ("vision.onnx", "decoder.onnx", "embed_tokens.npy", "tokenizer.json", "tokenizer_config.json"):
        (root / name).write_bytes(b"")
    return root


def test_plan_defaults_to_the_bundle_limits_and_engines_folder(tmp_path: Path) -> None:
    from edgevlm.export.tensorrt_build import BuildRequest, plan_build

    bundle = write_bundle(tmp_path / "b")
    plan = plan_build(BuildRequest(bundle, max_seq_len=1024, opt_batch=2))
    assert plan.out_dir == bundle / "engines"
    assert (plan.limits.max_batch, plan.limits.max_seq_len, plan.limits.opt_batch) == (16, 1024, 2)
    assert [g.name for g in plan.graphs] == ["vision", "decoder"]
    assert [p.name for p in plan.graphs[1].profiles] == ["prefill", "decode"]
    assert plan.graphs[1].onnx == bundle / "decoder.onnx"


def test_plan_errors_are_user_errors(tmp_path: Path) -> None:
    from edgevlm.errors import UserError
    from edgevlm.export.tensorrt_build import BuildRequest, plan_build

    bundle = write_bundle(tmp_path / "b")
    with pytest.raises(UserError, match=r"max_batch must be in \[1, 16\]"):
        plan_build(BuildRequest(bundle, max_batch=64))
    with pytest.raises(UserError, match="is a folder, not a file"):
        plan_build(BuildRequest(bundle, timing_cache=tmp_path))
    with pytest.raises(UserError, match="no manifest.json"):
        plan_build(BuildRequest(tmp_path))


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`edgevlm` with build-engine registered (until edgevlm.cli lists it)."""
    import edgevlm.cli

    if "edgevlm.export.build_engine_cli" not in edgevlm.cli.SUBCOMMAND_MODULES:
        modules = (*edgevlm.cli.SUBCOMMAND_MODULES, "edgevlm.export.build_engine_cli")
        monkeypatch.setattr(edgevlm.cli, "SUBCOMMAND_MODULES", modules)
    return main


def test_help(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["build-engine", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: edgevlm build-engine")
    for option in ("--bundle", "--out", "--max-batch", "--max-seq-len", "--opt-batch", "--timing-cache",
                   "--workspace-mb"):
        assert option in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bundle", "{missing}"], "bundle folder not found: {missing}"),
        (["--bundle", "{bundle}", "--max-batch", "0"], "--max-batch must be >= 1, got 0"),
        (["--bundle", "{bundle}", "--workspace-mb", "-5"], "--workspace-mb must be >= 1, got -5"),
        (["--bundle", "{bundle}", "--max-seq-len", "9999"], "max_seq_len must be in [1, 2048] (the bundle's limit)"),
    ],
)
def test_bad_input_is_one_line(cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                               message: str) -> None:
    bundle = write_bundle(tmp_path / "b")
    paths = {"missing": str(tmp_path / "nowhere"), "bundle": str(bundle)}
    assert cli(["build-engine", *(a.format(**paths) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("edgevlm build-engine: error: ")
    assert message.format(**paths) in err


def test_without_tensorrt_or_gpu_says_what_is_missing(cli: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from edgevlm.runtime.backends.trt_preflight import backend_problems, probe

    facts = probe()
    if not backend_problems("tensorrt", "cuda", facts):
        pytest.skip("TensorRT, CUDA torch and a GPU are all present: the build would run")
    assert cli(["build-engine", "--bundle", str(write_bundle(tmp_path / "b"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgevlm build-engine: error: build-engine cannot run here: ")
    assert err.count("\n") == 1
    if facts.tensorrt is None:
        assert "tensorrt Python package is missing" in err
    if facts.cuda_devices == 0:
        assert "no CUDA GPU is visible" in err


def test_build_record_names_no_precision_flags(tmp_path: Path) -> None:
    from edgevlm.export.tensorrt_build import BuildRequest, _build_record, plan_build

    plan = plan_build(BuildRequest(write_bundle(tmp_path / "b"), workspace_mb=2048))
    record = _build_record(plan, ("STRONGLY_TYPED",))
    assert record["strongly_typed"] is True
    assert record["builder_flags"] == []
    assert record["network_flags"] == ["STRONGLY_TYPED"]
    assert record["workspace_mb"] == 2048
    assert math.isclose(plan.limits.max_seq_len, 2048)
