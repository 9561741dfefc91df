"""Transparent huge pages for the process's large allocations, by re-executing it once with the
glibc tunable that asks for them.

A decode step at batch 1 streams every weight once: `small`'s 1.3 GB is ~325,000 pages of 4 KiB,
each a TLB miss and a page walk. Where the kernel gives huge pages only on request (THP "madvise",
a common default), ONNX Runtime's weights and the KV cache never get them (numpy asks for its own
large arrays, which is why the bandwidth probe had them and the decode did not).
`glibc.malloc.hugetlb=1` (glibc 2.35+; older ones ignore it) makes malloc ask for every
mmap-backed allocation. `small`, ONNX Runtime step at batch 1, five alternating pairs of
processes: medians 47.7-52.1 vs 50.8-61.3 ms, minimums 46.7-47.1 vs 48.4-50.9 ms.
glibc reads its tunables only when a process starts, hence the re-exec, done before any heavy
import. EDGEVLM_HUGE_PAGES=0 turns it off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
OPT_OUT = "EDGEVLM_HUGE_PAGES"


def thp_mode(path: Path = THP_ENABLED) -> str:
    """The kernel's THP mode ("always", "madvise", "never"), "" where there is none."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else ""


def wanted(environ: Mapping[str, str], mode: str) -> bool:
    """Whether a re-exec would change anything: only under "madvise" (with "always" every large
    allocation gets huge pages already, with "never" none can), once, and unless turned off."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    return mode == "madvise" and "glibc.malloc.hugetlb" not in tunables and environ.get(OPT_OUT) != "0"


def reexec_with_huge_pages() -> None:
    """Replace this process by itself with the tunable set, when `wanted`; else return. The
    process keeps its id, arguments and open files (a server's signals and pipes are unchanged)."""
    if not sys.platform.startswith("linux") or not wanted(os.environ, thp_mode()):
        return
    tunables = ":".join(t for t in (os.environ.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "GLIBC_TUNABLES": tunables})
