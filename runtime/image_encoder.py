"""Image embeddings for sequences about to prefill: image-cache lookups first, then the misses of
all those requests through the vision graph together.

Packing rule: a vision call attends over all its patches with a block-diagonal mask, so its
attention costs patches^2; images are packed until `max_patches` (one image larger than that
runs alone). The ONNX Runtime backend's fp32 CPU form then runs the call's images one attention
block at a time (backends/onnxruntime.py): on a CPU, packing buys no parallelism.
A failing call is retried image by image so only the bad image's request fails.
"""

from __future__ import annotations

import logging

import numpy as np

from edgevlm.runtime.backends.base import Backend, VisionBatch
from edgevlm.runtime.image_cache import ImageCache
from edgevlm.runtime.preprocess import ImageSpec, Preprocessor
from edgevlm.runtime.sequence import Sequence
from edgevlm.runtime.vision_inputs import vision_inputs

log = logging.getLogger("edgevlm.runtime")


class ImageEncoder:
    def __init__(self, backend: Backend, preprocessor: Preprocessor, cache: ImageCache, max_patches: int,
                 dtype: np.dtype) -> None:
        self.backend = backend
        self.preprocessor = preprocessor
        self.cache = cache
        self.max_patches = max_patches
        self.dtype = dtype
        self.num_vision_calls = 0

    def encode(self, seqs: list[Sequence]) -> dict[Sequence, str]:
        """Set `image_embeds` on every sequence; returns the error of each sequence that failed."""
        found: dict[str, np.ndarray] = {}
        missing: dict[str, ImageSpec] = {}
        for seq in seqs:
            for spec in seq.prompt.images:
                if spec.key in found or spec.key in missing:
                    continue
                cached = self.cache.get(spec.key)
                if cached is None:
                    missing[spec.key] = spec
                else:
                    found[spec.key] = cached
        errors: dict[str, str] = {}
        for group in self._pack(list(missing.values())):
            self._run(group, found, errors)
        failed: dict[Sequence, str] = {}
        for seq in seqs:
            bad = [errors[s.key] for s in seq.prompt.images if s.key in errors]
            if bad:
                failed[seq] = f"image could not be encoded: {bad[0]}"
            else:
                seq.image_embeds = np.concatenate([found[s.key] for s in seq.prompt.images])
        return failed

    def _pack(self, specs: list[ImageSpec]) -> list[list[ImageSpec]]:
        groups: list[list[ImageSpec]] = []
        patches = 0
        for spec in specs:
            size = int(np.prod(spec.grid_thw))
            if groups and patches + size <= self.max_patches:
                groups[-1].append(spec)
                patches += size
            else:
                groups.append([spec])
                patches = size
        return groups

    def _run(self, group: list[ImageSpec], found: dict[str, np.ndarray], errors: dict[str, str]) -> None:
        try:
            embeds = self._call(group)
        except Exception as exc:  # a bad image must not fail the others: retry one by one
            if len(group) > 1:
                for spec in group:
                    self._run([spec], found, errors)
                return
            log.warning("vision encoder failed on image %s: %s", group[0].key, exc)
            errors[group[0].key] = str(exc) or type(exc).__name__
            return
        offsets = np.cumsum([0] + [s.num_tokens for s in group])
        for spec, lo, hi in zip(group, offsets[:-1], offsets[1:], strict=True):
            part = np.array(embeds[lo:hi], dtype=self.dtype)  # own copy: cached independently
            found[spec.key] = part
            self.cache.put(spec.key, part)

    def _call(self, group: list[ImageSpec]) -> np.ndarray:
        """# -> [sum of image tokens, out_hidden]"""
        pixels = self.preprocessor.pixels(group)
        grids = np.array([s.grid_thw for s in group], np.int64)
        inputs = vision_inputs(grids, self.preprocessor.merge)
        batch = VisionBatch(pixels.astype(self.dtype, copy=False), inputs.pos_grid, inputs.rotary_pos,
                            inputs.attention_bias)
        self.num_vision_calls += 1
        embeds = self.backend.encode_images(batch)
        expected = sum(s.num_tokens for s in group)
        if embeds.shape[0] != expected:
            raise RuntimeError(f"vision graph returned {embeds.shape[0]} embeddings for {expected} tokens")
        return embeds
