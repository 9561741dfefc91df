"""Calibration fixtures: the demo bundle (exported once per session by the runtime tests' own
fixtures, loaded from tests/runtime/conftest.py rather than duplicated) and its int8 and int4
quantizations, each made once through the CLI."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# Small enough for CI, large enough to exercise batching: the gate runs both bundles on this slice.
EVAL_LIMIT = 100
SAMPLES = 8


def _runtime_fixtures():
    path = Path(__file__).parents[1] / "runtime" / "conftest.py"
    spec = importlib.util.spec_from_file_location("edgevlm_tests_runtime_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_runtime = _runtime_fixtures()
checkpoint_dir = _runtime.checkpoint_dir
bundle_dir = _runtime.bundle_dir


def quantize(*args: str) -> int:
    from edgevlm.cli import main

    return main(["quantize", *args])


@pytest.fixture(scope="session")
def quantize_cli():
    """`edgevlm quantize ARGS...` in this process; returns the exit code."""
    return quantize


@pytest.fixture(scope="session")
def eval_limit() -> int:
    return EVAL_LIMIT


@pytest.fixture(scope="session")
def int8_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "bundle"
    # Kept whatever the gate says, so the form tests run on; the budget has its own test
    # (test_accuracy_within_the_int8_budget), so a miss fails one test, not every test of the form.
    code = quantize("--bundle", str(bundle_dir), "--out", str(out), "--mode", "int8",
                    "--samples", str(SAMPLES), "--eval-limit", str(EVAL_LIMIT), "--allow-accuracy-drop")
    assert code == 0, "edgevlm quantize --mode int8 failed"
    return out


@pytest.fixture(scope="session")
def int4_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int4") / "bundle"
    # Kept whatever the gate says, as the int8 bundle is; the budget has its own test.
    code = quantize("--bundle", str(bundle_dir), "--out", str(out), "--mode", "int4",
                    "--samples", str(SAMPLES), "--eval-limit", str(EVAL_LIMIT), "--allow-accuracy-drop")
    assert code == 0, "edgevlm quantize --mode int4 failed"
    return out
