"""The store of finished prompts' K/V: keys tell images apart, the longest shared prefix wins, the
store is bounded. Reuse on a real engine is tested in test_prefix_reuse.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevlm.demo.questions import heldout_set
from edgevlm.demo.shapes import render
from edgevlm.runtime.engine import Engine
from edgevlm.runtime.prefix_cache import MIN_TOKENS, PrefixCache, PrefixEntry, prompt_key
from edgevlm.runtime.types import ImagePart, Message, TextPart


def entry(tokens: list[int], layers: int = 2) -> PrefixEntry:
    n = len(tokens)
    arrays = tuple(np.full((1, n, 4), float(t), np.float32) for t in range(layers))
    return PrefixEntry(np.array(tokens, np.int64), arrays, arrays)


def test_longest_shared_prefix_wins_and_short_ones_do_not_count() -> None:
    cache = PrefixCache(max_mb=1)
    base = list(range(100, 140))
    cache.store(entry(base))
    cache.store(entry(base[:20] + [7] * 20))
    found, length = cache.match(np.array(base[:30] + [1, 2, 3]), limit=1000)
    assert found is not None and length == 30 and list(found.key[:3]) == base[:3]
    assert cache.match(np.array(base[:MIN_TOKENS - 1] + [0] * 20), limit=1000) == (None, 0)
    # Never more than the caller's limit (one prompt token must be left to compute).
    assert cache.match(np.array(base), limit=25)[1] == 25


def test_store_is_bounded_least_recently_used_first() -> None:
    one = entry(list(range(1000, 1032)))
    cache = PrefixCache(max_mb=2.5 * one.nbytes / (1 << 20))
    first, second, third = (entry([k] * 32) for k in (1, 2, 3))
    cache.store(first)
    cache.store(second)
    assert cache.match(np.array([1] * 40), limit=40)[1] == 32  # `first` is now the most recent
    cache.store(third)
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    assert cache.match(np.array([2] * 40), limit=40) == (None, 0)  # `second` was evicted


@pytest.fixture(scope="module")
def engine(bundle_dir: Path) -> Engine:
    return Engine.from_bundle(bundle_dir, max_batch=4)


def test_same_tokens_with_another_image_give_another_key(engine: Engine) -> None:
    a, b = heldout_set(3)[:2]
    question = "What colour is the circle?"
    keys = [prompt_key(engine.preprocessor((Message("user", (ImagePart(render(s.scene)), TextPart(question))),)))
            for s in (a, b)]
    image = keys[0] < 0
    assert image.any() and not np.array_equal(keys[0], keys[1])
    assert (keys[0][~image] >= 0).all()
