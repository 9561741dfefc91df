"""The progress display: one line per stage step, failures marked, times kept."""

from __future__ import annotations

import io

import pytest

from edgevlm.export.progress import Progress


def test_stage_lines_and_times() -> None:
    out = io.StringIO()
    progress = Progress(out)
    with progress.stage("trace", "vision graph"):
        pass
    with progress.stage("trace", "decoder graph"):
        pass
    progress.note("12 nodes")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[2/5] trace     vision graph ... ok ")
    assert lines[2] == "      12 nodes"
    assert set(progress.seconds) == {"trace"}


def test_a_failing_step_is_marked_and_reraised() -> None:
    out = io.StringIO()
    with pytest.raises(KeyError), Progress(out).stage("load", "x"):
        raise KeyError("boom")
    assert out.getvalue().endswith("failed\n")


def test_unknown_stage_is_an_error() -> None:
    with pytest.raises(ValueError, match="stage must be one of"), Progress(None).stage("bake", "x"):
        pass
