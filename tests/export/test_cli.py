"""`edgevlm export` refusals: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgevlm.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["export", *args])
    return code, capsys.readouterr().err


def _refused(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> str:
    code, err = _run(capsys, "--out", str(out), *args)
    assert code == 2
    assert err.startswith("edgevlm export: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def checkpoint(demo_checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_checkpoint, tmp_path / "ckpt"))


def test_missing_model_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _refused(capsys, tmp_path / "out", "--model", str(tmp_path / "nope"))
    assert "model folder not found" in err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_without_force(capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    err = _refused(capsys, out, "--model", str(checkpoint))
    assert "already exists (use --force" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_corrupt_safetensors(capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path) -> None:
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4096])
    assert "corrupt safetensors" in _refused(capsys, tmp_path / "out", "--model", str(checkpoint))
    assert not (tmp_path / "out").exists()


def test_wrong_model_type(capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    config["model_type"] = "qwen2_vl"
    (checkpoint / "config.json").write_text(json.dumps(config))
    err = _refused(capsys, tmp_path / "out", "--model", str(checkpoint))
    assert "unsupported architecture 'qwen2_vl'" in err and "supported: glm4v" in err


@pytest.mark.parametrize(("option", "message"), [
    (("--dtype", "int4"), "dtype must be one of fp32, fp16, bf16"),
    (("--max-batch", "0"), "max_batch must be >= 1"),
    (("--opset", "13"), "opset must be >= 16"),
    (("--max-seq-len", "999999"), "exceeds the model's max_position_embeddings"),
])
def test_bad_options(capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path, option: tuple,
                     message: str) -> None:
    assert message in _refused(capsys, tmp_path / "out", "--model", str(checkpoint), *option)
    assert not (tmp_path / "out").exists()


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--out", "--dtype", "--max-batch", "--max-seq-len", "--force", "--skip-validate"):
        assert option in text


@pytest.mark.slow
def test_skip_validate_is_recorded_and_force_replaces(capsys: pytest.CaptureFixture[str], demo_checkpoint: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    code, err = _run(capsys, "--model", str(demo_checkpoint), "--out", str(out), "--skip-validate",
                     "--dtype", "fp16", "--max-seq-len", "512")
    assert code == 0, err
    assert "[5/5] validate" not in err and "[4/5] optimise" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"] == {"skipped": True}
    assert manifest["dtype"] == "fp16" and manifest["embed_tokens"]["dtype"] == "float16"
    assert manifest["graphs"]["decoder"]["inputs"]["inputs_embeds"]["dtype"] == "float16"
    assert manifest["graphs"]["decoder"]["outputs"]["logits"]["dtype"] == "float32"
    assert "already exists" in _refused(capsys, out, "--model", str(demo_checkpoint))
    (out / "manifest.json").write_text("{}")  # a stale bundle to replace
    code, err = _run(capsys, "--model", str(demo_checkpoint), "--out", str(out), "--skip-validate", "--force",
                     "--max-seq-len", "512")
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["dtype"] == "fp32"


def test_bf16_needs_skip_validate(capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path) -> None:
    err = _refused(capsys, tmp_path / "out", "--model", str(checkpoint), "--dtype", "bf16")
    assert "no bfloat16 MatMul kernels" in err and "--skip-validate" in err
