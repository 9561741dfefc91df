"""Atomic bundle writes: build in a hidden folder beside the output, rename it into place last.

A failed or interrupted export removes its folder, so the output path either holds a complete,
validated bundle or is untouched. A folder left by a killed process (SIGKILL cannot be caught)
is removed by the next export to the same path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from edgevlm.errors import UserError

MARKER = "manifest.json"


def _staging_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.export-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output(out_dir: Path, force: bool) -> None:
    """Refuse an existing output unless `force`; even then replace only an empty folder or a bundle."""
    if not out_dir.exists():
        return
    if not force:
        raise UserError(f"{out_dir} already exists (use --force to replace it)")
    if not out_dir.is_dir():
        raise UserError(f"refusing to replace {out_dir}: it is a file, not a bundle folder")
    if any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise UserError(f"refusing to replace {out_dir}: it is not empty and holds no {MARKER}")


def remove_stale(out_dir: Path) -> None:
    """Remove staging folders of earlier exports to `out_dir` whose process is gone."""
    if not out_dir.parent.is_dir():
        return
    prefix = _staging_prefix(out_dir)
    for path in out_dir.parent.glob(prefix + "*"):
        suffix = path.name[len(prefix) :]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_output(out_dir: Path, force: bool) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit it becomes `out_dir`, on any exception
    (KeyboardInterrupt included) it is deleted and `out_dir` is left as it was."""
    out_dir = out_dir.absolute()
    check_output(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out_dir)
    staging = out_dir.parent / f"{_staging_prefix(out_dir)}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        check_output(out_dir, force)
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, out_dir: Path) -> None:
    # Renames within one folder are atomic; the old bundle steps aside first and goes last.
    old = staging.with_name(staging.name + ".old")
    if out_dir.exists():
        out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except BaseException:
        if old.exists():
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
