"""server/malloc.py, checked on glibc's behaviour: a freed multi-megabyte buffer goes back to the
system with the tuning, and stays in the process without it."""

import os
import subprocess
import sys

SCRIPT = """
import sys
import numpy as np
from edgevlm.server.malloc import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
def rss_kb():
    return int(open("/proc/self/statm").read().split()[1]) * 4
block = np.ones(16 << 20, np.uint8)  # freeing a mapped block raises glibc's dynamic threshold to its size
del block
before = rss_kb()
block = np.ones(6 << 20, np.uint8)  # below that threshold, above the tuned 4 MB
pin = np.ones(64 << 10, np.uint8)  # allocated after it: the heap cannot shrink past the hole
del block
print(rss_kb() - before)
"""


def _kept_kb(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_freed_megabytes_return_to_the_system_once_tuned() -> None:
    assert _kept_kb("tuned") < 1024
    assert _kept_kb("default") > 4096  # glibc as it comes keeps the 6 MB block in its heap
