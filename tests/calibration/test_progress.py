"""Quantize's progress lines: its own six stages, the export's line format."""

from __future__ import annotations

import io

import pytest

from edgevlm.calibration.progress import STAGES, Progress


def test_quantize_stages_are_numbered_of_six() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    with progress.stage("gate", "scores"):
        pass
    assert stream.getvalue().startswith(f"[5/{len(STAGES)}] gate      scores ... ok ")
    assert set(progress.seconds) == {"gate"}


def test_an_export_stage_name_is_refused() -> None:
    with pytest.raises(ValueError, match="calibrate"), Progress(None).stage("trace", "x"):
        pass
