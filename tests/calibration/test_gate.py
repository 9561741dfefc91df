"""The accuracy gate: its arithmetic, and that it refuses a deliberately broken calibration."""

import json
from pathlib import Path

import pytest

from edgevlm.calibration.gate import AccuracyGateError, GateResult
from edgevlm.calibration.scoring import Score


def gate(original: int, quantized: int, max_drop: float, allowed: bool = False) -> GateResult:
    return GateResult(Score(original, 200, 1.0), Score(quantized, 200, 1.0), max_drop, allowed)


def test_a_drop_within_budget_passes() -> None:
    result = gate(180, 178, 1.0)  # 90.0% -> 89.0%: exactly one point
    assert result.drop == pytest.approx(1.0)
    assert result.passed
    result.check("int8")


def test_a_larger_drop_is_refused_with_the_numbers() -> None:
    result = gate(180, 170, 2.0)
    assert not result.passed
    with pytest.raises(AccuracyGateError, match=r"int4 85\.0% vs original 90\.0% on 200 questions: drop 5\.0"):
        result.check("int4")


def test_allowing_the_drop_keeps_the_bundle_but_records_the_failure() -> None:
    result = gate(180, 170, 2.0, allowed=True)
    result.check("int4")
    entry = result.as_manifest("demo")
    assert entry["passed"] is False and entry["drop_allowed"] is True and entry["drop_points"] == 5.0


def shrink(bound):
    """A bound 1000x smaller, in any of ORT's cache encodings: a float, or an encoded numpy array
    holding a scalar or a list."""
    if not isinstance(bound, dict):
        return bound * 1e-3
    data = bound["data"]
    return {**bound, "data": [v * 1e-3 for v in data] if isinstance(data, list) else data * 1e-3}


def broken_cache(int8_bundle: Path, tmp_path: Path) -> Path:
    """The bundle's own calibration cache with every activation range shrunk 1000x: nearly every
    activation saturates at the int8 limits."""
    cache = json.loads((int8_bundle / "calibration_cache.json").read_text())
    for graph in cache["ort"].values():
        for entry in graph["data"].values():
            for key in ("lowest", "highest"):
                entry[key] = shrink(entry[key])
    path = tmp_path / "broken_cache.json"
    path.write_text(json.dumps(cache))
    return path


@pytest.mark.slow
def test_the_gate_refuses_broken_scales_and_writes_nothing(
    bundle_dir: Path, int8_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], quantize_cli,
    eval_limit: int,
) -> None:
    out = tmp_path / "broken"
    capsys.readouterr()
    code = quantize_cli("--bundle", str(bundle_dir), "--out", str(out), "--mode", "int8",
                    "--calib-cache", str(broken_cache(int8_bundle, tmp_path)), "--eval-limit", str(eval_limit))
    err = capsys.readouterr().err
    assert code == 1
    message = [line for line in err.splitlines() if line.startswith("edgevlm quantize: error:")]
    assert len(message) == 1
    assert "accuracy gate failed" in message[0] and f"on {eval_limit} questions" in message[0]
    assert "nothing was written" in message[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".broken")], "staging folder left behind"


@pytest.mark.slow
def test_allow_accuracy_drop_writes_the_bundle_with_both_scores(
    bundle_dir: Path, int8_bundle: Path, tmp_path: Path, quantize_cli, eval_limit: int
) -> None:
    out = tmp_path / "allowed"
    code = quantize_cli("--bundle", str(bundle_dir), "--out", str(out), "--mode", "int8", "--allow-accuracy-drop",
                    "--calib-cache", str(broken_cache(int8_bundle, tmp_path)), "--eval-limit", str(eval_limit))
    assert code == 0
    accuracy = json.loads((out / "manifest.json").read_text())["quantization"]["accuracy"]
    assert accuracy["passed"] is False and accuracy["drop_allowed"] is True
    assert accuracy["quantized"]["accuracy"] < accuracy["original"]["accuracy"] - 1.0
