"""glibc malloc tuned for the server process, before any of its threads start.

Two glibc defaults make a busy server's RSS climb though nothing stays live:
- every thread that allocates gets its own heap arena (up to 8 per core), and each arena keeps
  the memory its thread freed: the server decodes images and runs requests on worker threads;
- blocks above the mmap threshold are mapped and unmapped, but the threshold rises to the size of
  every mapped block freed (up to 32 MB), after which the vision encoder's multi-megabyte buffers
  come from the heap and stay there.
So: at most 2 arenas, and a fixed 4 MB threshold. Measured with `edgevlm bench serve
--concurrency 1,64` (demo bundle, a new image per request), server RSS at 64 concurrent: 764-822 MB
as glibc comes (3 runs), 510-733 MB with the arena cap alone (6 runs), 427-443 MB with both
(2 runs; 435-468 MB with a 1 MB threshold, which cost ~10 % throughput); RSS at 1: ~200 MB.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # mallopt parameters, glibc's malloc.h
M_MMAP_THRESHOLD = -3
ARENAS = 2
MMAP_THRESHOLD = 4 << 20


def tune_malloc() -> bool:
    """Apply both settings, each unless the operator's MALLOC_* environment variable chose it;
    True when running on glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False  # not glibc (musl, macOS): nothing to tune
    if not os.environ.get("MALLOC_ARENA_MAX"):
        libc.mallopt(M_ARENA_MAX, ARENAS)
    if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return True
