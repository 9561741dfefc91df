"""Prompt-prefix KV reuse: the K/V of finished sequences, kept so that a later prompt starting with
the same tokens (a follow-up question about the same image, a shared system prompt) skips
prefilling them.

A finished sequence's cached tokens (prompt + the answer tokens already fed back) are copied out
of its row before the row frees; a newcomer whose prompt shares at least `MIN_TOKENS` leading
tokens with a stored entry gets that prefix copied into its fresh row and starts prefilling after
it. Sequences still running share too (prefix_reuse.py): a newcomer copies the longest prefix that a
running row has already computed, and waits for one still prefilling it (`Scheduler`'s hold).
Image placeholders all have the same token id, so in the keys each image's placeholders are
replaced by a negative number derived from the image's content digest: the same tokens with a
different picture never match. Entries are evicted least-recently-used beyond a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from edgevlm.runtime.preprocess import Prompt

MB = 1 << 20
# Shorter shared prefixes (the chat template's first tokens) are not worth a copy.
MIN_TOKENS = 16


def prompt_key(prompt: Prompt) -> np.ndarray:
    """The prompt's token ids with each image's placeholders replaced by its content's number.
    # -> [seq] int64"""
    key = np.array(prompt.input_ids, dtype=np.int64)
    first = 0
    for spec in prompt.images:
        at = prompt.image_token_index[first : first + spec.num_tokens]
        key[at] = -1 - int(spec.key[:15], 16)
        first += spec.num_tokens
    return key


def shared_length(a: np.ndarray, b: np.ndarray, limit: int) -> int:
    """How many leading tokens `a` and `b` share, at most `limit`."""
    n = min(len(a), len(b), limit)
    same = a[:n] == b[:n]
    return n if bool(same.all()) else int(np.argmin(same))


@dataclass(frozen=True, slots=True)
class PrefixEntry:
    key: np.ndarray  # [tokens] int64
    keys: tuple[np.ndarray, ...]  # per layer [kv_heads, tokens, head_dim]
    values: tuple[np.ndarray, ...]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.keys, *self.values))


class PrefixCache:
    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * MB)
        self._entries: OrderedDict[bytes, PrefixEntry] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.tokens_reused = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def store(self, entry: PrefixEntry) -> None:
        """Keep an entry (replacing one with the same tokens); evict the oldest beyond the budget."""
        if len(entry.key) < MIN_TOKENS or entry.nbytes > self.max_bytes:
            return
        name = entry.key.tobytes()
        old = self._entries.pop(name, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._entries[name] = entry
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes

    def match(self, key: np.ndarray, limit: int) -> tuple[PrefixEntry | None, int]:
        """The entry sharing the longest prefix with `key` (at most `limit` tokens), and its length;
        (None, 0) below MIN_TOKENS. A match counts as recently used; `record_hit` counts its use."""
        best, best_len = None, 0
        for name, entry in self._entries.items():
            length = shared_length(entry.key, key, limit)
            if length > best_len:
                best, best_len = name, length
        if best is None or best_len < MIN_TOKENS:
            return None, 0
        self._entries.move_to_end(best)
        return self._entries[best], best_len

    def record_hit(self, tokens: int) -> None:
        """A prompt started after `tokens` reused ones (from this store or a running row)."""
        self.hits += 1
        self.tokens_reused += tokens
