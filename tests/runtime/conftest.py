"""Runtime test fixtures: a demo checkpoint, and a real bundle exported from it once per session."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Exports are slow on a CPU: a bundle is kept per (checkpoint, export code) digest and reused by
# later sessions; any change to either makes a new one. .cache/ is git-ignored.
BUNDLE_CACHE = REPO / ".cache" / "test-bundles"

# Everything loads from local folders; a hub lookup would be a bug.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$EDGEVLM_TEST_CHECKPOINT, else the demo model when present (trained, its answers have clear
    margins, so greedy comparisons are meaningful), else a random-weight demo checkpoint."""
    from edgevlm.demo.checkpoint import DEMO_DIR, new_model, save_checkpoint

    if os.environ.get("EDGEVLM_TEST_CHECKPOINT"):
        return Path(os.environ["EDGEVLM_TEST_CHECKPOINT"])
    if (DEMO_DIR / "model.safetensors").is_file():
        return DEMO_DIR
    out = tmp_path_factory.mktemp("checkpoint") / "demo"
    save_checkpoint(new_model(seed=0), out)
    return out


def export_digest(checkpoint: Path) -> str:
    digest = hashlib.sha256()
    sources = sorted((REPO / "export").glob("*.py"))
    for path in sorted(checkpoint.iterdir()) + sources:
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def bundle_dir(checkpoint_dir: Path, request: pytest.FixtureRequest) -> Path:
    """`edgevlm export --model CHECKPOINT --out BUNDLE` (the export engineer's pipeline, parity gate
    included), run at most once per checkpoint and export code. For the committed demo model this
    is the suite's shared demo bundle (tests/conftest.py), so one export serves every folder."""
    from edgevlm.cli import main
    from edgevlm.demo.checkpoint import DEMO_DIR

    if checkpoint_dir == DEMO_DIR:
        return request.getfixturevalue("demo_bundle")

    out = BUNDLE_CACHE / export_digest(checkpoint_dir)
    if not (out / "manifest.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        code = main(["export", "--model", str(checkpoint_dir), "--out", str(out), "--max-seq-len", "2048"])
        assert code == 0, "edgevlm export failed"
    return out


@pytest.fixture(scope="session")
def hf_model(checkpoint_dir: Path):
    """The PyTorch reference (transformers), eval mode."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(checkpoint_dir).eval()


@pytest.fixture(scope="session")
def hf_processor(checkpoint_dir: Path):
    from edgevlm.demo.hf_compat import load_processor

    return load_processor(checkpoint_dir)
