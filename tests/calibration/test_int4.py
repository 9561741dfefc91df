"""`edgevlm quantize --mode int4` (weight-only, MatMulNBits) on the demo bundle, end to end."""

import json
from pathlib import Path

import onnx
import pytest

from edgevlm.runtime.bundle import load_bundle

pytestmark = pytest.mark.slow


def test_decoder_matmuls_are_4_bit_blocks(int4_bundle: Path) -> None:
    model = onnx.load(str(int4_bundle / "decoder.onnx"), load_external_data=False)
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert nbits
    for node in nbits:
        attrs = {a.name: a.i for a in node.attribute}
        assert attrs["bits"] == 4 and attrs["block_size"] == 32 and attrs["accuracy_level"] == 4
    q = json.loads((int4_bundle / "manifest.json").read_text())["quantization"]
    assert q["graphs"]["decoder"]["quantized_linears"] == len(nbits)
    assert not q["graphs"]["decoder"]["kept_float"]
    producer = {out: n for n in model.graph.node for out in n.output}
    assert producer["logits"].op_type == "MatMulNBits" or any(  # the lm_head is 4-bit too
        producer[i].op_type == "MatMulNBits" for i in producer["logits"].input if i in producer)


def test_vision_is_int8_and_every_file_checks(int4_bundle: Path, bundle_dir: Path) -> None:
    bundle = load_bundle(int4_bundle, verify_sha256=True)
    source = json.loads((bundle_dir / "manifest.json").read_text())["files"]
    assert bundle.manifest["files"]["vision.onnx.data"]["bytes"] < source["vision.onnx.data"]["bytes"] / 2
    vision = onnx.load(str(int4_bundle / "vision.onnx"), load_external_data=False)
    assert sum(n.op_type == "DequantizeLinear" for n in vision.graph.node) > 10
    assert bundle.vision_cpu_file is not None
    # rtn also quantizes the source's in-place decoder form, its 4-bit weights read from decoder.onnx.data
    assert bundle.decoder_cpu_file is not None and "decoder.cpu.onnx" in bundle.manifest["files"]
    assert not (int4_bundle / "decoder.cpu.onnx.data").exists()
    form = onnx.load(str(bundle.decoder_cpu_file), load_external_data=False).graph
    ops = [n.op_type for n in form.node]
    assert ops.count("MatMulNBits") == bundle.manifest["quantization"]["graphs"]["decoder"]["quantized_linears"]
    assert ops.count("GroupQueryAttention") == bundle.architecture.num_layers
    assert bundle.manifest["files"]["decoder.onnx.data"]["bytes"] < source["decoder.onnx.data"]["bytes"] / 3
    assert bundle.manifest["embed_tokens"]["dtype"] == "int4"


def test_the_gate_scored_both_bundles(int4_bundle: Path, eval_limit: int) -> None:
    q = json.loads((int4_bundle / "manifest.json").read_text())["quantization"]
    assert (q["mode"], q["method"], q["format"]) == ("int4", "rtn", "matmulnbits")
    accuracy = q["accuracy"]
    assert accuracy["original"]["total"] == accuracy["quantized"]["total"] == eval_limit
    assert accuracy["max_drop_points"] == 2.0
    assert accuracy["passed"] == (accuracy["drop_points"] <= 2.0)


def test_accuracy_within_the_int4_budget(int4_bundle: Path) -> None:
    q = json.loads((int4_bundle / "manifest.json").read_text())["quantization"]
    assert q["accuracy"]["passed"] and q["accuracy"]["drop_points"] <= 2.0


def test_the_runtime_serves_it_without_flags(int4_bundle: Path) -> None:
    from edgevlm.demo.questions import heldout_set
    from edgevlm.runtime.demo_answers import answer_batch
    from edgevlm.runtime.engine import Engine

    engine = Engine.from_bundle(int4_bundle, max_batch=2)
    answers = answer_batch(engine, heldout_set(2), max_new_tokens=32)
    engine.close()
    assert all(answers)


def test_awq_scales_then_rounds(bundle_dir: Path, tmp_path: Path, quantize_cli) -> None:
    out = tmp_path / "awq"
    code = quantize_cli("--bundle", str(bundle_dir), "--out", str(out), "--mode", "int4", "--method", "awq",
                        "--samples", "4", "--eval-limit", "16", "--allow-accuracy-drop")
    assert code == 0
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    assert q["method"] == "awq" and q["calibration"]["feeds"]["decoder"] > 0
    model = onnx.load(str(out / "decoder.onnx"), load_external_data=False)
    assert sum(n.op_type == "MatMulNBits" for n in model.graph.node) == q["graphs"]["decoder"]["quantized_linears"]
    # Scales fold into the RMSNorm weights where a norm feeds the group; other groups get a Mul.
    assert any(n.name.endswith("_awq_mul") for n in model.graph.node)
