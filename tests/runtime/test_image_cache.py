"""Image cache: content-keyed, LRU, bounded by bytes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgevlm.runtime.image_cache import MB, ImageCache, image_digest


def embeds(fill: float, mb: float = 0.25) -> np.ndarray:
    return np.full(int(mb * MB) // 4, fill, np.float32)


def test_digest_is_by_content() -> None:
    a = Image.new("RGB", (20, 10), (1, 2, 3))
    assert image_digest(a) == image_digest(a.copy())
    assert image_digest(a) != image_digest(Image.new("RGB", (20, 10), (1, 2, 4)))
    assert image_digest(a) != image_digest(Image.new("RGB", (10, 20), (1, 2, 3)))


def test_lru_eviction_by_bytes_and_counters() -> None:
    cache = ImageCache(max_mb=0.6)
    cache.put("a", embeds(1))
    cache.put("b", embeds(2))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", embeds(3))  # over budget: evicts b
    assert cache.get("b") is None and cache.get("c") is not None
    assert (cache.hits, cache.misses) == (2, 1)
    assert cache.nbytes <= cache.max_bytes and len(cache) == 2


def test_entries_are_read_only_and_oversize_is_skipped() -> None:
    cache = ImageCache(max_mb=0.1)
    cache.put("big", embeds(1, mb=0.25))
    assert cache.get("big") is None
    cache.put("small", embeds(1, mb=0.05))
    with pytest.raises(ValueError):
        cache.get("small")[0] = 5.0


def test_zero_budget_disables() -> None:
    cache = ImageCache(0)
    cache.put("a", embeds(1, mb=0.01))
    assert cache.get("a") is None
    with pytest.raises(ValueError, match="image_cache_mb"):
        ImageCache(-1)
