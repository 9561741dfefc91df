"""The whole export: stages reported, a validated bundle written once; failures leave nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from edgevlm.export import parity
from edgevlm.export.options import ExportOptions
from edgevlm.export.pipeline import run_export
from edgevlm.export.progress import Progress


def test_every_stage_is_reported(exported: dict[str, Any]) -> None:
    log = exported["log"]
    for stage in ("[1/5] load", "[2/5] trace", "[3/5] convert", "[4/5] optimise", "[5/5] validate"):
        assert stage in log
    assert "greedy 32/32 identical" in log
    assert "failed" not in log


def test_only_the_bundle_is_left_beside_it(bundle_dir: Path) -> None:
    assert [p.name for p in bundle_dir.parent.iterdir()] == [bundle_dir.name]


class InterruptAt(Progress):
    """Ctrl-C arriving when a given stage starts."""

    def __init__(self, stage: str) -> None:
        super().__init__(io.StringIO())
        self.at = stage

    def stage(self, name: str, detail: str):  # type: ignore[override]
        if name == self.at:
            raise KeyboardInterrupt
        return super().stage(name, detail)


def test_an_interrupted_export_leaves_nothing(demo_checkpoint: Path, tmp_path: Path) -> None:
    options = ExportOptions(model_dir=demo_checkpoint, out_dir=tmp_path / "out", validate=False)
    with pytest.raises(KeyboardInterrupt):
        run_export(options, InterruptAt("convert"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_failed_parity_gate_writes_nothing(demo_checkpoint: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # No float32 graph can meet a zero tolerance: the real gate rejects the real export.
    monkeypatch.setitem(parity.TOLERANCE, "fp32", 0.0)
    out = tmp_path / "out"
    log = io.StringIO()
    with pytest.raises(parity.ParityError, match=r"parity gate failed \(fp32\): .*rel error"):
        run_export(ExportOptions(model_dir=demo_checkpoint, out_dir=out, max_seq_len=512), Progress(log))
    assert list(tmp_path.iterdir()) == []
    assert "[5/5] validate" in log.getvalue()
