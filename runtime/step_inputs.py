"""A scheduled batch -> the decoder's input arrays (BUNDLE.md, decoder.onnx).

Rows have different cached lengths and chunk sizes: every row is padded to the batch's longest
chunk and its keys to the batch's longest cache (`past`); the additive bias hides what a row must
not see. Padded query rows see only themselves so their softmax stays finite (their outputs are
never read: logits come from `logits_index`, and only `counts` new K/V are stored).
"""

from __future__ import annotations

import numpy as np

from edgevlm.runtime.backends.base import DecoderStep
from edgevlm.runtime.embed_table import EmbedTable
from edgevlm.runtime.scheduler import ScheduledBatch


def attention_bias(starts: np.ndarray, counts: np.ndarray, seq: int) -> np.ndarray:
    """# starts, counts: [batch] -> [batch, 1, seq, past + seq], past = max(starts)"""
    batch, past = len(starts), int(np.max(starts)) if len(starts) else 0
    if seq == 1:
        return _decode_bias(starts, past)
    cached = np.arange(past)[None, :] < starts[:, None]  # [batch, past]
    q = np.arange(seq)[:, None]
    k = np.arange(seq)[None, :]
    real_query = q[None] < counts[:, None, None]  # [batch, seq, 1]
    new = np.where(real_query, k[None] <= q[None], k[None] == q[None])  # [batch, seq, seq]
    visible = np.concatenate([np.broadcast_to(cached[:, None, :], (batch, seq, past)), new], axis=2)
    return np.where(visible, np.float32(0), np.float32(-np.inf)).astype(np.float32)[:, None]


def _decode_bias(starts: np.ndarray, past: int) -> np.ndarray:
    """The one-new-token case, built directly (it runs every decode step): a row sees its own
    cached keys and its new token. # starts: [batch] -> [batch, 1, 1, past + 1]"""
    bias = np.zeros((len(starts), 1, 1, past + 1), np.float32)
    bias[:, 0, 0, :past][np.arange(past)[None, :] >= starts[:, None]] = -np.inf
    return bias


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
        attention_bias=attention_bias(starts, counts, seq),
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
