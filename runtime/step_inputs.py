"""A scheduled batch -> the decoder's input arrays (BUNDLE.md, decoder.onnx).

Rows have different cached lengths and chunk sizes: every row is padded to the batch's longest
chunk; its attention bias (runtime/attention_bias.py) comes from the step's starts and counts.
"""

from __future__ import annotations

import numpy as np

from edgevlm.runtime.backends.base import DecoderStep
from edgevlm.runtime.embed_table import EmbedTable
from edgevlm.runtime.scheduler import ScheduledBatch


def decoder_step(batch: ScheduledBatch, embed_table: EmbedTable, dtype: np.dtype) -> DecoderStep:
    """# embed_table: [vocab, hidden] -> DecoderStep for rows first_row .. first_row + len(seqs)"""
    seqs = batch.seqs
    size, seq = len(seqs), max(batch.num_new)
    ids = np.zeros((size, seq), np.int64)
    positions = np.zeros((3, size, seq), np.int64)
    starts = np.array([s.num_cached for s in seqs], np.int64)
    counts = np.array(batch.num_new, np.int64)
    for b, (s, start, count) in enumerate(zip(seqs, starts.tolist(), batch.num_new, strict=True)):
        if batch.is_prefill:
            ids[b, :count] = s.prompt.input_ids[start : start + count]
            positions[:, b, :count] = s.prompt.positions[:, start : start + count]
        else:
            ids[b, 0] = s.output_ids[-1]
            positions[:, b, 0] = start + s.prompt.rope_delta
    embeds = embed_table.rows(ids, dtype)  # [batch, seq, hidden]
    if batch.is_prefill:
        for b, (s, start, count) in enumerate(zip(seqs, starts.tolist(), batch.num_new, strict=True)):
            _place_image_embeds(embeds[b], s, start, count)
    return DecoderStep(
        inputs_embeds=embeds,
        position_ids=positions,
        logits_index=counts - 1,
        first_row=batch.first_row,
        starts=starts,
        counts=counts,
    )


def _place_image_embeds(row: np.ndarray, s, start: int, count: int) -> None:
    """Image placeholders in this chunk take their image embeddings (in prompt order).
    # row: [seq, hidden]"""
    index = s.prompt.image_token_index
    if not len(index):
        return
    lo, hi = np.searchsorted(index, [start, start + count])
    if hi > lo:
        row[index[lo:hi] - start] = s.image_embeds[lo:hi]
