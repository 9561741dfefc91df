"""runtime/huge_pages.py: when the re-exec happens, and that the re-executed process really gets
huge pages for a plain malloc'd buffer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgevlm.runtime.huge_pages import OPT_OUT, TUNABLE, thp_mode, wanted


def test_wanted_only_under_madvise_once_and_unless_turned_off() -> None:
    assert wanted({}, "madvise")
    assert not wanted({}, "always") and not wanted({}, "never") and not wanted({}, "")
    assert not wanted({"GLIBC_TUNABLES": TUNABLE}, "madvise")
    assert wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise")
    assert not wanted({OPT_OUT: "0"}, "madvise")


def test_thp_mode_reads_the_bracketed_choice(tmp_path: Path) -> None:
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    assert thp_mode(tmp_path / "enabled") == "madvise"
    assert thp_mode(tmp_path / "missing") == ""


PROBE = """
import os, sys
from edgevlm.runtime.huge_pages import reexec_with_huge_pages
reexec_with_huge_pages()
buffer = bytearray(64 << 20)  # malloc'd (mmap-backed), touched by the zero fill
huge = next(int(l.split()[1]) for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages"))
print(os.environ.get("GLIBC_TUNABLES", ""), huge, sys.argv[1:])
"""


@pytest.mark.skipif(thp_mode() != "madvise", reason="the kernel's THP mode is not madvise here")
def test_the_reexecuted_process_gets_huge_pages(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    out = subprocess.run([sys.executable, str(script), "a b"], env=env, capture_output=True, text=True, check=True)
    tunables, huge_kb, args = out.stdout.split(" ", 2)
    assert TUNABLE in tunables and args.strip() == "['a b']"  # arguments survive the re-exec
    assert int(huge_kb) >= 32 << 10  # most of the 64 MB buffer sits in 2 MB pages
    off = subprocess.run([sys.executable, str(script)], env={**env, OPT_OUT: "0"}, capture_output=True, text=True,
                         check=True)
    assert off.stdout.split(" ")[0] == ""
