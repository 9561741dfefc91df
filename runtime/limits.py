"""Engine limits: capacity, queueing and chunking knobs, validated once (ValueError names the field)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class EngineLimits:
    max_batch: int | None = None  # concurrent sequences (KV rows); default: the bundle's limits.max_batch
    max_seq_len: int | None = None  # tokens per sequence, prompt + answer; default and cap: the bundle's
    kv_cache_mb: float | None = None  # lowers max_batch to what fits this budget
    max_kv_tokens: int | None = None  # the same budget counted in tokens (rows x max_seq_len)
    max_queue: int = 64  # waiting requests beyond the free rows; more -> EngineOverloaded
    max_prefill_tokens: int = 512  # padded prompt tokens per prefill step (the chunk size)
    # Patches per vision-encoder call (several images batch up to it; a larger image runs alone).
    # One call attends over all its patches (block-diagonal mask), so packing k images of p patches
    # costs (k p)^2 attention instead of k p^2: on a CPU, where the encoder is compute-bound, that
    # is pure waste beyond what fuller GEMMs gain for small images. 256 packs up to four 224x224
    # images; a 448x448 image (1024 patches) runs alone.
    max_vision_patches: int = 256
    max_images: int = 8  # images per request
    image_cache_mb: float = 64.0  # image-embedding LRU cache; 0 disables it
    prefix_cache_mb: float = 64.0  # K/V of finished prompts for prefix reuse (LRU); 0 disables it
    threads: int = 0  # ONNX Runtime intra-op threads; 0 = its default (physical cores)
    # ONNX Runtime's workers spin between a call's ops (never after it returns: the backend sets
    # force_spinning_stop); off, every op wakes a sleeping worker.
    spin_wait: bool = True
    verify_sha256: bool = False  # hash every bundle file at load
    skip_special_tokens: bool = False  # drop special tokens (e.g. box tags) from the output text

    def __post_init__(self) -> None:
        positive = ("max_batch", "max_seq_len", "max_prefill_tokens", "max_vision_patches", "max_images")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("kv_cache_mb", "max_kv_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name in ("max_queue", "image_cache_mb", "prefix_cache_mb", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_kwargs(cls, **kwargs) -> EngineLimits:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown engine limit(s) {unknown}; known: {sorted(known)}")
        return cls(**kwargs)
