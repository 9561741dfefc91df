import subprocess

import pytest

from edgevlm.errors import UserError
from edgevlm.server import demo_bundle


@pytest.fixture
def fake_export(tmp_path, monkeypatch):
    """A demo model folder, and `edgevlm export` replaced by a stub that records its calls."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights v1")
    monkeypatch.setattr(demo_bundle, "demo_model_dir", lambda: model)
    calls: list[list[str]] = []

    def run(command, check):
        calls.append(command)
        out = command[command.index("--out") + 1]
        if "fail" in out:
            return subprocess.CompletedProcess(command, 1)
        (tmp_path / out).mkdir(parents=True)
        (tmp_path / out / "manifest.json").write_text("{}")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(demo_bundle.subprocess, "run", run)
    return model, calls


def test_exports_once_then_reuses_until_weights_change(fake_export, tmp_path, capsys):
    model, calls = fake_export
    out = tmp_path / "cache" / "demo-bundle"
    assert demo_bundle.ensure_demo_bundle(out) == out and (out / "manifest.json").is_file()
    assert demo_bundle.ensure_demo_bundle(out) == out
    assert len(calls) == 1 and calls[0][-4:] == ["--model", str(model), "--out", calls[0][-1]]
    assert "first run only" in capsys.readouterr().err
    (model / "model.safetensors").write_bytes(b"weights v2")
    demo_bundle.ensure_demo_bundle(out)
    assert len(calls) == 2 and not list(out.parent.glob("*.tmp-*"))


def test_failed_export_is_a_user_error(fake_export, tmp_path):
    with pytest.raises(UserError, match="exporting the demo model failed"):
        demo_bundle.ensure_demo_bundle(tmp_path / "fail" / "demo-bundle")


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEVLM_DEMO_BUNDLE", str(tmp_path / "b"))
    assert demo_bundle.demo_bundle_dir() == tmp_path / "b"
    monkeypatch.delenv("EDGEVLM_DEMO_BUNDLE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert demo_bundle.demo_bundle_dir() == tmp_path / "edgevlm" / "demo-bundle"


def test_no_demo_model(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_bundle, "demo_model_dir", lambda: tmp_path / "absent")
    with pytest.raises(UserError, match="no demo model"):
        demo_bundle.ensure_demo_bundle(tmp_path / "out")
