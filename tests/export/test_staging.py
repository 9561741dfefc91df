"""Atomic bundle writes: a complete bundle appears at once, or nothing changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgevlm.errors import UserError
from edgevlm.export.staging import check_output, remove_stale, staged_output


def test_success_renames_the_staging_folder_into_place(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with staged_output(out, force=False) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".bundle.export-")
        (staging / "manifest.json").write_text("{}")
        assert not out.exists()
    assert (out / "manifest.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_leaves_nothing(tmp_path: Path, error: BaseException) -> None:
    out = tmp_path / "nested" / "bundle"
    with pytest.raises(type(error)), staged_output(out, force=False) as staging:
        (staging / "vision.onnx").write_text("half")
        raise error
    assert not out.exists()
    assert list((tmp_path / "nested").iterdir()) == []


def test_failure_keeps_the_old_bundle_when_forcing(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    with pytest.raises(RuntimeError), staged_output(out, force=True):
        raise RuntimeError("boom")
    assert (out / "manifest.json").read_text() == "old"


def test_force_replaces_an_old_bundle(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    (out / "stale.onnx").write_text("x")
    with staged_output(out, force=True) as staging:
        (staging / "manifest.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert (out / "manifest.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_existing_output_is_refused_without_force(tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    with pytest.raises(UserError, match="already exists \\(use --force"):
        check_output(tmp_path / "bundle", force=False)


def test_force_never_replaces_something_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_output(tmp_path / "file", force=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("precious")
    with pytest.raises(UserError, match="holds no manifest.json"):
        check_output(tmp_path / "docs", force=True)
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", force=True)


def test_staging_left_by_a_killed_export_is_cleaned(tmp_path: Path) -> None:
    dead = tmp_path / ".bundle.export-999999999"  # no such pid
    alive = tmp_path / f".bundle.export-{os.getpid()}"
    dead.mkdir()
    alive.mkdir()
    remove_stale(tmp_path / "bundle")
    assert not dead.exists() and alive.exists()
