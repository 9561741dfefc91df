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


def test_bundles_measured_interleaved_in_one_process(demo_bundle: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["bench", "compare", "--bundles", str(demo_bundle), str(demo_bundle), "--repeats", "2",
            "--decode-tokens", "4", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "repeat 2/2" in captured.err and "decode, batch 1" in captured.out
    figures = json.loads((out / "bench_compare.json").read_text())
    assert len(figures) == 2 and figures[0]["size_mb"] == figures[1]["size_mb"] > 0
    for fig in figures:
        # a cold request runs the vision encoder, the image-cache hit does not
        assert fig["ttft_ms"] > fig["vision_ms"] > 0 and fig["decode_ms_per_token"] > 0


@pytest.mark.parametrize("args", [[], ["r.json", "--bundles", "b"], ["--bundles", "b", "--repeats", "0"]])
def test_compare_wants_reports_or_bundles(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "compare", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ("--bundles" in err or "--repeats" in err)


def test_compare_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "compare", "--bundles", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err
