"""The decoder's attention bias for rows of different cached lengths and chunk sizes."""

from __future__ import annotations

import numpy as np

from edgevlm.runtime.attention_bias import attention_bias


def test_bias_mixed_rows() -> None:
    bias = attention_bias(np.array([2, 0]), np.array([3, 1]), seq=3)
    assert bias.shape == (2, 1, 3, 5) and bias.dtype == np.float32
    visible = bias[:, 0] == 0
    # row 0: 2 cached keys, 3 new tokens, causal
    assert visible[0].tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]
    # row 1: nothing cached (past padding hidden), 1 real token; padded queries see only themselves
    assert visible[1].tolist() == [
        [False, False, True, False, False],
        [False, False, False, True, False],
        [False, False, False, False, True],
    ]


def test_decode_bias_hides_other_rows_padding() -> None:
    bias = attention_bias(np.array([5, 2]), np.array([1, 1]), seq=1)
    assert (bias[:, 0, 0] == 0).tolist() == [[True] * 6, [True, True, False, False, False, True]]


def test_decode_bias_equals_the_general_rule() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        starts = rng.integers(0, 40, size=rng.integers(1, 6))
        fast = attention_bias(starts, np.ones_like(starts), seq=1)
        general = attention_bias(starts, np.ones_like(starts), seq=2)[:, :, :1]  # row 0 of a 2-token step
        past = int(starts.max())
        assert fast.shape == (len(starts), 1, 1, past + 1)
        assert np.array_equal(fast[..., :past], general[..., :past]) and (fast[..., past] == 0).all()
