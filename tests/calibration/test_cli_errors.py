"""Bad input ends in one clear line and exit 2, before any slow work."""

from pathlib import Path

import pytest


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_missing_bundle_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], quantize_cli) -> None:
    code = quantize_cli("--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--mode", "int8")
    assert code == 2
    assert error_lines(capsys) == [f"edgevlm quantize: error: bundle folder not found: {tmp_path / 'nope'}"]


def test_wrong_method_for_the_mode_is_one_line(capsys: pytest.CaptureFixture[str], quantize_cli) -> None:
    code = quantize_cli("--bundle", "b", "--out", "o", "--mode", "int8", "--method", "awq")
    assert code == 2
    (line,) = error_lines(capsys)
    assert line.startswith("edgevlm quantize: error: method for int8 must be one of")


@pytest.mark.slow
def test_a_folder_without_images_is_one_line(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], quantize_cli
) -> None:
    empty = tmp_path / "images"
    empty.mkdir()
    code = quantize_cli("--bundle", str(bundle_dir), "--out", str(tmp_path / "o"), "--mode", "int8",
                        "--calib-images", str(empty))
    assert code == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"edgevlm quantize: error: no images in {empty}")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_an_unreadable_image_is_one_line(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], quantize_cli
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "scan.jpg").write_bytes(b"not a jpeg")
    code = quantize_cli("--bundle", str(bundle_dir), "--out", str(tmp_path / "o"), "--mode", "int4",
                        "--method", "awq", "--calib-images", str(images))
    assert code == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"edgevlm quantize: error: cannot read calibration image {images / 'scan.jpg'}")


@pytest.mark.slow
def test_an_already_quantized_bundle_is_one_line(
    int8_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], quantize_cli
) -> None:
    code = quantize_cli("--bundle", str(int8_bundle), "--out", str(tmp_path / "o"), "--mode", "int4")
    assert code == 2
    assert error_lines(capsys) == [
        f"edgevlm quantize: error: {int8_bundle} is already quantized (int8); quantize its float bundle instead"
    ]


@pytest.mark.slow
def test_an_existing_output_needs_force(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], quantize_cli
) -> None:
    out = tmp_path / "o"
    out.mkdir()
    code = quantize_cli("--bundle", str(bundle_dir), "--out", str(out), "--mode", "int8")
    assert code == 2
    assert error_lines(capsys) == [f"edgevlm quantize: error: {out} already exists (use --force to replace it)"]
