"""Where a newly admitted prompt's leading K/V comes from instead of prefill: the store of
finished prompts (`PrefixCache`) or a row still running.

Rules:
- a newcomer takes the longest prefix it shares with a stored entry or with the tokens a running
  row has already computed (copied row to row), at least MIN_TOKENS, and always leaves one prompt
  token to compute (its logits give the first answer token);
- a waiting sequence holds back while a row now prefilling will compute at least MIN_TOKENS more
  of its prefix than it could reuse now: questions about one image that arrive together prefill
  it once, each of the others waiting for that one prefill (the scheduler keeps it a row);
- a sequence that ends (not by error) leaves its cached tokens, prompt then answer, in the store.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgevlm.runtime.kv_cache import KVCache
from edgevlm.runtime.prefix_cache import MIN_TOKENS, PrefixCache, PrefixEntry, prompt_key, shared_length
from edgevlm.runtime.sequence import Sequence


class PrefixReuse:
    def __init__(self, store: PrefixCache, cache: KVCache, prefilling: Callable[[], list[Sequence]]) -> None:
        self.store = store
        self.cache = cache
        self.prefilling = prefilling  # the sequences holding a row whose prompt is not all cached

    def admit(self, seq: Sequence) -> None:
        """Start a sequence that now holds its row after the longest reusable prefix."""
        key, limit = key_of(seq), len(seq.prompt) - 1
        entry, length = self.store.match(key, limit)
        donor, shared = self._running_match(seq, key, limit)
        row = self.cache.table.row(seq)
        if donor is not None and shared > length:
            self.cache.copy_prefix(self.cache.table.row(donor), row, shared)
            length = shared
        elif entry is not None:
            self.cache.write_prefix(row, entry.keys, entry.values, length)
        else:
            return
        self.store.record_hit(length)
        self.cache.table.advance(seq, length)
        seq.num_cached = seq.prefix_reused = length

    def should_hold(self, seq: Sequence) -> bool:
        """True while a row now prefilling will compute enough more of this prompt's prefix."""
        key, limit = key_of(seq), len(seq.prompt) - 1
        shared = [(shared_length(p.prefix_key, key, limit), p.num_cached)
                  for p in self.prefilling() if p.prefix_key is not None]
        # Reusable now is at least min(shared, cached) of each: nothing to wait for below this.
        if max((n - cached for n, cached in shared), default=0) < MIN_TOKENS:
            return False
        now = max(self.store.match(key, limit)[1], self._running_match(seq, key, limit)[1])
        return max(n for n, _ in shared) - now >= MIN_TOKENS

    def keep(self, seq: Sequence) -> None:
        """Store an ending sequence's cached tokens (prompt + fed-back answer) for later prompts."""
        if seq.prefix_key is None or seq not in self.cache.table:
            return
        table = self.cache.table
        length = table.length(seq)
        keys, values = self.cache.read_prefix(table.row(seq), length)
        self.store.store(PrefixEntry(cached_key(seq, length), keys, values))

    def _running_match(self, seq: Sequence, key: np.ndarray, limit: int) -> tuple[Sequence | None, int]:
        """The running sequence whose computed tokens share the longest prefix with `key`."""
        best, best_len = None, MIN_TOKENS - 1
        table = self.cache.table
        for row in range(table.num_used):
            other: Sequence = table.owner(row)  # type: ignore[assignment]
            if other is seq or other.prefix_key is None:
                continue
            # Only the first `limit` tokens can match: a decoding row's answer is not joined to its
            # prompt key unless the match could reach into it.
            length = shared_length(cached_key(other, min(table.length(other), limit)), key, limit)
            if length > best_len:
                best, best_len = other, length
        return (best, best_len) if best is not None else (None, 0)


def key_of(seq: Sequence) -> np.ndarray:
    """The sequence's prompt key (prefix_cache.prompt_key), made once."""
    if seq.prefix_key is None:
        seq.prefix_key = prompt_key(seq.prompt)
    return seq.prefix_key


def cached_key(seq: Sequence, length: int) -> np.ndarray:
    """The key of a sequence's first `length` cached tokens: its prompt, then its answer."""
    key = key_of(seq)
    if length <= len(key):
        return key[:length]
    return np.concatenate([key, np.asarray(seq.output_ids, np.int64)])[:length]
