"""`edgevlm bench compare`: reports of several bundles, each against the first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevlm.bench.compare import format_table, load, write_outputs
from edgevlm.cli import main


def fake_report(tmp_path: Path, name: str, mode: str | None, weight_bytes: int, ttft: float, hit: float,
                decode: float) -> Path:
    bundle = tmp_path / name
    bundle.mkdir()
    (bundle / "decoder.onnx").write_bytes(b"x" * 1000)
    (bundle / "decoder.onnx.data").write_bytes(b"x" * weight_bytes)
    (bundle / "tokenizer.json").write_bytes(b"x" * 10_000_000)  # not weights: not counted
    manifest = {"dtype": "fp32", **({"quantization": {"mode": mode}} if mode else {})}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    report = {"bundle": str(bundle), "sides": {"runtime": {
        "ttft_ms": ttft, "ttft_image_cache_hit_ms": hit, "decode_ms_per_token": decode,
        "decode_tokens_per_s": {"1": 1000 / decode}}}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(report))
    return path


def test_ratios_are_against_the_first_report(tmp_path: Path) -> None:
    base = fake_report(tmp_path, "fp32", None, 4 * (1 << 20) - 1000, ttft=400.0, hit=100.0, decode=20.0)
    int8 = fake_report(tmp_path, "int8", "int8", (1 << 20) - 1000, ttft=200.0, hit=50.0, decode=8.0)
    figures = [load(base), load(int8)]
    assert figures[0].size_mb == pytest.approx(4.0) and figures[1].size_mb == pytest.approx(1.0)
    assert figures[1].vision_ms == 150.0  # cold minus cache hit
    table = format_table(figures)
    assert "int8 (int8)" in table and "fp32 (fp32)" in table
    assert "1.0 MB (0.25x)" in table and "200 ms (0.50x)" in table
    assert "150 ms (2.00x faster)" in table and "8.0 ms (2.50x faster)" in table
    written = write_outputs(figures, tmp_path / "out")
    assert json.loads(written[0].read_text())[1]["size_mb"] == pytest.approx(1.0)


def test_cli_refuses_a_file_that_is_not_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    assert main(["bench", "compare", str(junk), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a readable `bench engine` report" in err
