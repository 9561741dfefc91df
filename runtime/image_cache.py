"""LRU cache of image-token embeddings keyed by the image's content, so follow-up questions about
the same picture skip preprocessing and the vision encoder. Bounded by bytes."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
from PIL import Image

MB = 1 << 20


def image_digest(image: Image.Image) -> str:
    """Content hash: mode, size and pixels (two decodes of the same file hash the same)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class ImageCache:
    def __init__(self, max_mb: float) -> None:
        if max_mb < 0:
            raise ValueError(f"image_cache_mb must be >= 0, got {max_mb}")
        self.max_bytes = int(max_mb * MB)
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        """Drop every entry (the hit/miss counters keep counting)."""
        self._entries.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> np.ndarray | None:
        """# -> [image_tokens, hidden] or None"""
        embeds = self._entries.get(key)
        if embeds is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return embeds

    def put(self, key: str, embeds: np.ndarray) -> None:
        if embeds.nbytes > self.max_bytes or key in self._entries:
            return
        embeds.flags.writeable = False  # shared by every request that hits it
        self._entries[key] = embeds
        self.nbytes += embeds.nbytes
        while self.nbytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
