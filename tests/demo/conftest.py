"""Fixtures for the demo tests: a tiny random-weight checkpoint and the committed demo model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Everything here loads from local folders; a hub lookup would be a bug.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised demo model saved like a real checkpoint (untrained: answers are noise)."""
    from edgevlm.demo.checkpoint import new_model, save_checkpoint

    out = tmp_path_factory.mktemp("tiny") / "checkpoint"
    save_checkpoint(new_model(seed=0), out)
    return out


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The committed, trained demo model (demo/model)."""
    from edgevlm.demo.checkpoint import DEMO_DIR

    if not (DEMO_DIR / "config.json").is_file():
        pytest.fail(f"the demo model is missing: {DEMO_DIR} (train it with python -m edgevlm.demo.train)")
    return DEMO_DIR
