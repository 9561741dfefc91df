"""Engine metadata and compatibility, without TensorRT: the version table, the rebuild rule, the
engine manifest's round trip and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevlm.errors import UserError
from edgevlm.export.engine_profiles import EngineLimits, decoder_profiles, vision_profile
from edgevlm.runtime.backends.trt_compat import BuildTarget, EngineIncompatible, check_compatible, incompatibility
from edgevlm.runtime.backends.trt_manifest import (
    EngineFile,
    EngineManifest,
    EngineManifestError,
    manifest_digest,
    read_engine_manifest,
    write_engine_manifest,
)
from edgevlm.runtime.backends.trt_version import QUIRKS, parse_version, quirks_for
from edgevlm.runtime.bundle import load_bundle

ORIN = BuildTarget("10.3.0.30", "Orin", (8, 7))
REBUILD = "edgevlm build-engine --bundle b"


# -- version table -------------------------------------------------------------------------------
def test_parse_version() -> None:
    version = parse_version("10.3.0.30")
    assert version.release == (10, 3, 0)
    assert str(version) == "10.3.0.30"
    assert parse_version("11.0").release == (11, 0, 0)
    with pytest.raises(ValueError, match="not a TensorRT version"):
        parse_version("ten")


def test_quirks_table_is_the_only_version_switch() -> None:
    assert quirks_for(parse_version("10.3.0")).network_flags == ("STRONGLY_TYPED",)
    # TensorRT 11 is always strongly typed and deprecates the flag.
    assert quirks_for(parse_version("11.4.1")).network_flags == ()
    assert quirks_for(parse_version("12.0.0")) == QUIRKS[max(QUIRKS)]
    with pytest.raises(UserError, match="TensorRT 8.6.1 is too old: edgevlm needs TensorRT 10.x or newer"):
        quirks_for(parse_version("8.6.1"))


def test_no_weak_typing_flag_anywhere_in_the_table() -> None:
    weak = {"FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}
    for quirks in QUIRKS.values():
        assert not weak & set(quirks.network_flags)


# -- compatibility rule ----------------------------------------------------------------------------
def test_same_release_and_architecture_is_compatible() -> None:
    assert incompatibility(ORIN, BuildTarget("10.3.0.26", "Orin", (8, 7))) is None
    # Another GPU model of the same compute capability runs the engine.
    assert incompatibility(ORIN, BuildTarget("10.3.0.30", "Jetson AGX Orin 64GB", (8, 7))) is None


@pytest.mark.parametrize(
    ("here", "reason"),
    [
        (BuildTarget("10.7.0.23", "Orin", (8, 7)), "built with TensorRT 10.3.0.30, this machine has 10.7.0.23"),
        (BuildTarget("11.0.0", "Orin", (8, 7)), "built with TensorRT 10.3.0.30, this machine has 11.0.0"),
        (BuildTarget("10.3.0.30", "NVIDIA L4", (8, 9)), "built for Orin (sm_87), this GPU is NVIDIA L4 (sm_89)"),
    ],
)
def test_other_release_or_gpu_must_rebuild(here: BuildTarget, reason: str) -> None:
    assert incompatibility(ORIN, here) == reason
    with pytest.raises(EngineIncompatible) as raised:
        check_compatible(ORIN, here, REBUILD)
    message = str(raised.value)
    assert message == f"the TensorRT engines were {reason}: rebuild them with `{REBUILD}`"
    assert "\n" not in message
    assert isinstance(raised.value, UserError)


def test_build_target_round_trip_and_validation() -> None:
    assert BuildTarget.from_json(json.loads(json.dumps(ORIN.to_json()))) == ORIN
    assert ORIN.describe() == "TensorRT 10.3.0.30 on Orin (sm_87)"
    with pytest.raises(ValueError, match="compute_capability"):
        BuildTarget("10.3.0", "x", (8,))  # type: ignore[arg-type]


# -- engine manifest -----------------------------------------------------------------------------
def engine_manifest(bundle_dir: Path, engine_dir: Path) -> EngineManifest:
    bundle = load_bundle(bundle_dir)
    limits = EngineLimits.from_bundle(bundle.limits)
    engine_dir.mkdir(parents=True, exist_ok=True)
    for name in ("vision.plan", "decoder.plan"):
        (engine_dir / name).write_bytes(b"plan")
    return EngineManifest(
        target=ORIN,
        bundle_manifest_sha256=manifest_digest(bundle_dir),
        limits=limits,
        build={"strongly_typed": True, "network_flags": ["STRONGLY_TYPED"], "builder_flags": []},
        vision=EngineFile("vision.plan", 4, "x", (vision_profile(bundle.architecture.vision, limits),)),
        decoder=EngineFile("decoder.plan", 4, "y", decoder_profiles(bundle.architecture, limits)),
        created="2025-01-01T00:00:00+00:00",
    )


def test_manifest_round_trip(fake_bundle: Path, tmp_path: Path) -> None:
    manifest = engine_manifest(fake_bundle, tmp_path / "engines")
    write_engine_manifest(tmp_path / "engines", manifest)
    loaded = read_engine_manifest(tmp_path / "engines", fake_bundle, REBUILD)
    assert loaded == manifest
    assert loaded.decoder.profile_index("decode") == 1
    data = json.loads((tmp_path / "engines" / "manifest.json").read_text())
    assert data["target"] == {"tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": [8, 7]}
    assert data["build"]["builder_flags"] == []
    assert set(data["engines"]["decoder"]["profiles"][0]["shapes"]) >= {"inputs_embeds", "past_key_3"}


def test_missing_engines_say_how_to_build(fake_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineManifestError) as raised:
        read_engine_manifest(tmp_path / "nothing", fake_bundle, REBUILD)
    assert str(raised.value) == f"no TensorRT engines in {tmp_path / 'nothing'}: build them with `{REBUILD}`"


def test_engines_of_another_export_must_rebuild(fake_bundle: Path, tmp_path: Path) -> None:
    write_engine_manifest(tmp_path / "engines", engine_manifest(fake_bundle, tmp_path / "engines"))
    manifest = json.loads((fake_bundle / "manifest.json").read_text())
    manifest["limits"]["max_batch"] = 8  # a re-export
    (fake_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineManifestError, match="built from another export of the bundle: rebuild with"):
        read_engine_manifest(tmp_path / "engines", fake_bundle, REBUILD)


def test_missing_plan_or_bad_manifest_is_one_line(fake_bundle: Path, tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    write_engine_manifest(engines, engine_manifest(fake_bundle, engines))
    (engines / "decoder.plan").unlink()
    with pytest.raises(EngineManifestError, match="missing engine file decoder.plan: rebuild with"):
        read_engine_manifest(engines, fake_bundle, REBUILD)
    (engines / "manifest.json").write_text("{not json")
    with pytest.raises(EngineManifestError, match="unreadable engine manifest .*: rebuild with"):
        read_engine_manifest(engines, fake_bundle, REBUILD)
    (engines / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(EngineManifestError, match="not an edgevlm engine manifest"):
        read_engine_manifest(engines, fake_bundle, REBUILD)
