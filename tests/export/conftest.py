"""Fixtures for the export tests: a demo checkpoint and the bundle exported from it, once per session."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

# Everything here loads from local folders; a hub lookup would be a bug.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
# The first test to use the shared bundle pays for a whole export (about 1.5 min on an idle 2-core
# machine, many times that on a busy one); the suite-wide 900 s limit is for single tests.
EXPORT_TIMEOUT_S = 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == HERE and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(EXPORT_TIMEOUT_S))


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the committed demo model (the trainer may replace demo/model mid-run), or a
    random-weight demo checkpoint when none is committed yet."""
    from edgevlm.demo.checkpoint import DEMO_DIR, new_model, save_checkpoint

    out = tmp_path_factory.mktemp("checkpoint") / "demo"
    if (DEMO_DIR / "config.json").is_file():
        shutil.copytree(DEMO_DIR, out)
    else:
        save_checkpoint(new_model(0), out)
    return out


@pytest.fixture(scope="session")
def exported(demo_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo checkpoint exported (fp32, validated) once; tests share it read-only."""
    from edgevlm.export.options import ExportOptions
    from edgevlm.export.pipeline import run_export
    from edgevlm.export.progress import Progress

    out = tmp_path_factory.mktemp("bundles") / "demo-fp32"
    log = io.StringIO()
    options = ExportOptions(model_dir=demo_checkpoint, out_dir=out, max_batch=4, max_seq_len=1024)
    result = run_export(options, Progress(log))
    return {"dir": out, "manifest": result.manifest, "log": log.getvalue()}


@pytest.fixture(scope="session")
def bundle_dir(exported: dict[str, Any]) -> Path:
    return exported["dir"]


@pytest.fixture(scope="session")
def manifest(bundle_dir: Path) -> dict[str, Any]:
    return json.loads((bundle_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def hf_model(demo_checkpoint: Path) -> Any:
    """The demo checkpoint in transformers, float32, eval mode (the reference)."""
    import torch

    from edgevlm.export.checkpoint import load_model

    return load_model(demo_checkpoint, torch.float32)
