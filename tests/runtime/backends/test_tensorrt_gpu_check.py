"""bench/gpu_check without a CUDA device: a clean skip with the reason, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_main_skips_cleanly_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: gpu_check would run its checks")
    from edgevlm.bench.gpu_check import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu_check: skipped, no CUDA device (torch ")


def test_shell_wrapper_runs_from_the_checkout() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run([str(ROOT / "bench" / "gpu_check"), "--steps", "5"], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gpu_check: ")
