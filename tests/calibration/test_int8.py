"""`edgevlm quantize --mode int8` on the demo bundle, end to end."""

import json
import math
from pathlib import Path

import pytest

from edgevlm.runtime.bundle import load_bundle

pytestmark = pytest.mark.slow


def test_the_int8_bundle_is_a_normal_bundle(int8_bundle: Path, bundle_dir: Path) -> None:
    bundle = load_bundle(int8_bundle, verify_sha256=True)  # every sha256 recomputed
    on_disk = {p.name for p in int8_bundle.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert set(bundle.manifest["files"]) == on_disk - {"manifest.json"}
    source = json.loads((bundle_dir / "manifest.json").read_text())
    assert set(source["files"]) <= set(bundle.manifest["files"])
    assert "calibration_cache.json" in bundle.manifest["files"]
    assert bundle.manifest["files"]["tokenizer.json"] == source["files"]["tokenizer.json"]
    embed = bundle.manifest["embed_tokens"]
    assert (embed["dtype"], embed["scales"]) == ("int8", "embed_tokens.scales.npy")
    assert bundle.manifest["files"]["embed_tokens.npy"]["bytes"] < source["files"]["embed_tokens.npy"]["bytes"] / 3
    assert {"vision.cpu.onnx", "decoder.cpu.onnx"} <= set(bundle.manifest["files"])
    assert bundle.manifest["graphs"]["decoder"]["cpu_form"]["file"] == "decoder.cpu.onnx"


def test_the_manifest_records_the_quantization(int8_bundle: Path, eval_limit: int) -> None:
    q = json.loads((int8_bundle / "manifest.json").read_text())["quantization"]
    assert (q["mode"], q["method"], q["format"]) == ("int8", "percentile", "qdq")
    assert q["samples"] == 8 and q["calibration"]["source"] == "demo"
    assert q["calibration"]["feeds"]["vision"] > 0 and q["calibration"]["feeds"]["decoder"] > 0
    assert q["graphs"]["decoder"]["quantized_linears"] > 0 and q["graphs"]["vision"]["quantized_linears"] > 0
    assert q["sizes"]["quantized"]["total"] < q["sizes"]["source"]["total"] / 2
    assert q["sizes"]["bundle"]["quantized"] < q["sizes"]["bundle"]["source"] / 2
    accuracy = q["accuracy"]
    assert accuracy["original"]["total"] == accuracy["quantized"]["total"] == eval_limit
    assert accuracy["max_drop_points"] == 1.0
    assert accuracy["passed"] == (accuracy["drop_points"] <= 1.0)
    assert set(accuracy["forms"]) == {"served", "qdq"}  # the CPU form and the TensorRT form, both gated
    worst = min(form["accuracy"] for form in accuracy["forms"].values())
    assert accuracy["quantized"]["accuracy"] == worst


def test_accuracy_within_the_int8_budget(int8_bundle: Path) -> None:
    accuracy = json.loads((int8_bundle / "manifest.json").read_text())["quantization"]["accuracy"]
    assert accuracy["passed"] and accuracy["drop_points"] <= 1.0


def test_the_calibration_cache_holds_a_scale_per_tensor(int8_bundle: Path) -> None:
    cache = json.loads((int8_bundle / "calibration_cache.json").read_text())
    assert cache["method"] == "percentile" and cache["samples"] == 8
    for graph in ("vision", "decoder"):
        scales = cache["scales"][graph]
        assert scales and all(math.isfinite(s) and s > 0 for s in scales.values())
        assert set(scales) == set(cache["ort"][graph]["data"])


def test_the_runtime_serves_it_without_flags(int8_bundle: Path, bundle_dir: Path) -> None:
    from edgevlm.demo.questions import heldout_set
    from edgevlm.runtime.demo_answers import answer_batch
    from edgevlm.runtime.engine import Engine

    samples = heldout_set(4)
    answers = {}
    for name, path in (("fp32", bundle_dir), ("int8", int8_bundle)):
        engine = Engine.from_bundle(path, max_batch=4)
        answers[name] = answer_batch(engine, samples, max_new_tokens=32)
        engine.close()
    assert all(answers["int8"])
    assert sum(a == b for a, b in zip(answers["fp32"], answers["int8"], strict=True)) >= 2


def test_reusing_the_calibration_cache_reproduces_the_graphs(
    int8_bundle: Path, bundle_dir: Path, tmp_path: Path, quantize_cli, eval_limit: int
) -> None:
    out = tmp_path / "again"
    code = quantize_cli("--bundle", str(bundle_dir), "--out", str(out), "--mode", "int8",
                        "--calib-cache", str(int8_bundle / "calibration_cache.json"), "--eval-limit", str(eval_limit),
                        "--allow-accuracy-drop")
    assert code == 0
    first = json.loads((int8_bundle / "manifest.json").read_text())["files"]
    again = json.loads((out / "manifest.json").read_text())
    for name in ("vision.onnx", "vision.onnx.data", "decoder.onnx", "decoder.onnx.data"):
        assert again["files"][name]["sha256"] == first[name]["sha256"], name
    assert again["quantization"]["calibration"]["feeds"] is None
