"""A backend that runs the real one and keeps a copy of every graph input it was given.

Driving the runtime's own `Engine` through it means calibration sees exactly what serving feeds the
graphs: the runtime's preprocessing, packed vision batches with their masks, and decoder steps with
real KV, attention_bias and M-RoPE position_ids (BUNDLE.md).
"""

from __future__ import annotations

import numpy as np

from edgevlm.runtime.backends.base import Backend, DecoderStep, VisionBatch
from edgevlm.runtime.kv_cache import KVCache

Feed = dict[str, np.ndarray]


class RecordingBackend(Backend):
    name = "recording"

    def __init__(self, inner: Backend, num_layers: int, decode_stride: int = 4) -> None:
        if decode_stride < 1:
            raise ValueError(f"decode_stride must be >= 1, got {decode_stride}")
        self.inner = inner
        self.num_layers = num_layers
        self.decode_stride = decode_stride
        self.vision_feeds: list[Feed] = []
        self.decoder_feeds: list[Feed] = []
        self.num_prefill = 0
        self._decode_steps = 0

    def encode_images(self, batch: VisionBatch) -> np.ndarray:
        self.vision_feeds.append({
            "pixel_values": batch.pixel_values.copy(),
            "pos_grid": batch.pos_grid.copy(),
            "rotary_pos": batch.rotary_pos.copy(),
            "attention_bias": batch.attention_bias.copy(),
        })
        return self.inner.encode_images(batch)

    def decode(self, step: DecoderStep, cache: KVCache) -> np.ndarray:
        if self._keep(step):
            self.decoder_feeds.append(self._decoder_feed(step, cache))
        return self.inner.decode(step, cache)

    def _keep(self, step: DecoderStep) -> bool:
        """Every prefill step; every `decode_stride`-th decode step. Decode steps run the same
        weights at seq=1, so a few keep their ranges represented without cache copies dominating
        memory."""
        if step.seq > 1 or step.past == 0:
            self.num_prefill += 1
            return True
        self._decode_steps += 1
        return self._decode_steps % self.decode_stride == 1 or self.decode_stride == 1

    def _decoder_feed(self, step: DecoderStep, cache: KVCache) -> Feed:
        feed: Feed = {
            "inputs_embeds": step.inputs_embeds.copy(),
            "position_ids": step.position_ids.astype(np.int64),
            "attention_bias": step.attention_bias.astype(np.float32),
            "logits_index": step.logits_index.astype(np.int64),
        }
        # The graph reads only the first `past` cache positions (BUNDLE.md), so the copy stops there;
        # a copy, never a view: the engine overwrites its cache rows as it goes.
        for layer in range(self.num_layers):
            keys, values = cache.rows_view(layer, step.first_row, step.batch)
            feed[f"past_key_{layer}"] = keys[:, :, : step.past].copy()
            feed[f"past_value_{layer}"] = values[:, :, : step.past].copy()
        return feed

    def close(self) -> None:
        self.inner.close()
