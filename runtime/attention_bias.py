"""The decoder's additive attention bias for rows of different cached lengths and chunk sizes.

Every row is padded to the batch's longest chunk and its keys to the batch's longest cache
(`past`); the bias hides what a row must not see. Padded query rows see only themselves so their
softmax stays finite (their outputs are never read: logits come from `logits_index`, and only
`counts` new K/V are stored).
"""

from __future__ import annotations

import numpy as np


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
