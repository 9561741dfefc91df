"""glibc's malloc arenas capped for the server process.

glibc gives every thread that allocates its own heap arena, up to 8 per core. The server decodes
uploaded images and runs requests on worker threads, and each arena keeps the megabytes its thread
freed, so RSS climbs with concurrency though nothing is live. Capping the arenas at 2 before any
thread starts: `edgevlm bench serve --concurrency 1,64` (demo bundle, new images per request) gave
a server RSS at 64 concurrent of 510 MB, against 764 MB uncapped (199 MB at 1).
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # mallopt parameter, glibc's malloc.h
ARENAS = 2


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap the arenas unless MALLOC_ARENA_MAX already chose; True when glibc took the cap."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the operator's own setting wins
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False  # not glibc (musl, macOS): nothing to cap
    return bool(libc.mallopt(M_ARENA_MAX, arenas))
