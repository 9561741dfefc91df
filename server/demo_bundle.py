"""The demo model's bundle, exported on first use into a cache folder.

Export needs torch, so it runs as a subprocess (`edgevlm export`): the serving process never
imports torch. The cache is refreshed when the demo checkpoint's weights or the exporter's sources change.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgevlm.errors import UserError

CACHE_ENV = "EDGEVLM_DEMO_BUNDLE"
STAMP = ".demo-source"


def demo_bundle_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgevlm" / "demo-bundle"


def demo_model_dir() -> Path:
    from edgevlm.demo.checkpoint import DEMO_DIR

    return DEMO_DIR


def export_sources() -> list[Path]:
    """The exporter's own source files, found without importing it (it imports torch)."""
    spec = importlib.util.find_spec("edgevlm.export")
    folders = spec.submodule_search_locations if spec is not None else None
    return sorted(p for folder in folders or [] for p in Path(folder).glob("*.py"))


def source_digest(model_dir: Path) -> str:
    """Changes when the demo weights or the exporter change: either makes the cached bundle stale."""
    digest = hashlib.sha256()
    for path in [*sorted(model_dir.glob("*.safetensors")), *export_sources()]:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def ensure_demo_bundle(out: Path | None = None) -> Path:
    """The cached demo bundle, exporting it first if missing or stale (progress on stderr)."""
    out = out or demo_bundle_dir()
    model_dir = demo_model_dir()
    if not (model_dir / "config.json").is_file():
        raise UserError(f"no demo model at {model_dir}: train it (python -m edgevlm.demo.train) or pass --bundle")
    digest = source_digest(model_dir)
    stamp = out / STAMP
    if (out / "manifest.json").is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return out
    print(
        f"edgevlm serve: exporting the demo model to {out} (first run only, about a minute)...",
        file=sys.stderr,
    )
    staging = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "edgevlm.cli",
        "export",
        "--model",
        str(model_dir),
        "--out",
        str(staging),
    ]
    if subprocess.run(command, check=False).returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"exporting the demo model failed (command: {' '.join(command)})")
    (staging / STAMP).write_text(digest + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print(f"edgevlm serve: demo bundle ready at {out}", file=sys.stderr)
    return out
