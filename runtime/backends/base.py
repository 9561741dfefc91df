"""What the engine asks of an inference backend: run the vision graph, and run one decoder step
whose new K/V land in the engine's KV cache rows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from edgevlm.runtime.attention_bias import attention_bias
from edgevlm.runtime.kv_cache import KVCache, KVLayout


@dataclass(frozen=True, slots=True)
class VisionBatch:
    """Several images' patches, concatenated (BUNDLE.md, vision.onnx)."""

    pixel_values: np.ndarray  # [patches, patch_dim] model dtype
    pos_grid: np.ndarray  # [patches, 2] float32
    rotary_pos: np.ndarray  # [patches, 2] int64
    attention_bias: np.ndarray  # [patches, patches] float32


@dataclass(frozen=True, slots=True)
class DecoderStep:
    """One decoder call over the cache rows `first_row .. first_row + batch` (BUNDLE.md)."""

    inputs_embeds: np.ndarray  # [batch, seq, hidden] model dtype
    position_ids: np.ndarray  # [3, batch, seq] int64
    logits_index: np.ndarray  # [batch] int64
    first_row: int
    starts: np.ndarray  # [batch] tokens already cached per row (where the new K/V go)
    counts: np.ndarray  # [batch] real (unpadded) new tokens per row

    @property
    def batch(self) -> int:
        return int(self.inputs_embeds.shape[0])

    @property
    def seq(self) -> int:
        return int(self.inputs_embeds.shape[1])

    @property
    def past(self) -> int:
        """The longest cache among the rows: the bias's key axis is past + seq."""
        return int(self.starts.max()) if len(self.starts) else 0

    @property
    def attention_bias(self) -> np.ndarray:
        """# -> [batch, 1, seq, past + seq] float32. Built on each read, not per step: the in-place
        CPU form (GroupQueryAttention with per-row lengths) never reads it."""
        return attention_bias(self.starts, self.counts, self.seq)

    def row(self, b: int) -> DecoderStep:
        """Row `b` alone, unpadded: its real new tokens (its bias then covers its own cached keys and them)."""
        count = int(self.counts[b])
        return DecoderStep(
            inputs_embeds=self.inputs_embeds[b : b + 1, :count],
            position_ids=self.position_ids[:, b : b + 1, :count],
            logits_index=np.array([count - 1], np.int64),
            first_row=self.first_row + b,
            starts=self.starts[b : b + 1],
            counts=self.counts[b : b + 1],
        )


class Backend(ABC):
    name: str

    def create_cache(self, layout: KVLayout) -> KVCache:
        """The KV cache this backend binds: host arrays here; a device backend returns its own
        KVCache subclass (it may hold fewer rows than `layout` asks for)."""
        return KVCache(layout)

    @abstractmethod
    def encode_images(self, batch: VisionBatch) -> np.ndarray:
        """# -> image_embeds [patches / merge^2, out_hidden]"""

    @abstractmethod
    def decode(self, step: DecoderStep, cache: KVCache) -> np.ndarray:
        """Run the decoder over the step's rows, store the new tokens' K/V in `cache` at each row's
        `starts` (without copying the cache), and return logits. # -> [batch, vocab] float32"""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions and device memory."""
