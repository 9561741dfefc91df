"""The memory-bandwidth floor of decoding: every decode step reads all decoder weights once, so a
step cannot be faster than (weight bytes) / (memory bandwidth), whatever the batch."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

MB = 1 << 20
PROBE_ROWS = 4096
BLAS_SETTLE_S = 0.2  # measured: a step right after a BLAS call took 97-99 ms, after 0.2 s 49-51 ms


def copy_bandwidth(size_mb: int = 256, repeats: int = 5) -> float:
    """Bytes per second moved by a large numpy copy (read + write counted), best of `repeats`."""
    src = np.ones(size_mb * MB // 8, np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def read_bandwidth(size_mb: int = 512, repeats: int = 5) -> float:
    """Bytes per second read by summing a large array on every core at once (numpy releases the
    GIL in reductions), best of `repeats`. Recorded beside the floor, which reads with the GEMV
    (`gemv_seconds`): both this and the copy read slower than a decode step does."""
    data = np.ones(size_mb * MB // 4, np.float32)
    parts = np.array_split(data, os.cpu_count() or 1)
    best = float("inf")
    with ThreadPoolExecutor(len(parts)) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - start)
    return data.nbytes / best


def probe_matrix(nbytes: int) -> np.ndarray:
    """A float32 matrix of about `nbytes` for the probes. Size it as the bytes being floored: a
    last-level cache can hold hundreds of MB (260 MiB on one of these machines), so a fixed-size
    probe would time the cache for one model and memory for another."""
    rows = PROBE_ROWS
    return np.ones((rows, max(1, nbytes // 4 // rows)), np.float32)


def gemv_seconds(matrix: np.ndarray, repeats: int) -> list[float]:
    """Seconds of each of `repeats` float32 vector-matrix products over `matrix` (numpy's BLAS, all
    cores): a decode step's own read pattern (each weight once, streamed), and here the fastest
    reader (29 GB/s against 23 for the copy, 16 for the sum). BLAS worker threads spin for a while
    after a call: a decode step started at once runs up to 2x slower, so the calls end with a
    pause that lets them sleep."""
    vector = np.ones(matrix.shape[0], np.float32)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        vector @ matrix
        seconds.append(time.perf_counter() - start)
    time.sleep(BLAS_SETTLE_S)
    return seconds


def decoder_weight_bytes(bundle_dir: Path) -> int:
    """Bytes of the decoder graph's weights (external data + graph file); the embedding table is
    gathered row by row (a few KB per token), so it is not part of the per-step read."""
    files = [bundle_dir / "decoder.onnx", bundle_dir / "decoder.onnx.data"]
    return sum(f.stat().st_size for f in files if f.is_file())


def floor_ms_per_step(weight_bytes: int, bandwidth: float) -> float:
    return 1000.0 * weight_bytes / bandwidth
