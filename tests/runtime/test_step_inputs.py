"""Decoder inputs: the attention bias of mixed-length rows, and image embeddings in their places."""

from __future__ import annotations

import numpy as np

from edgevlm.runtime.detokenizer import Detokenizer
from edgevlm.runtime.embed_table import EmbedTable
from edgevlm.runtime.preprocess import Prompt
from edgevlm.runtime.sampling import SamplingState
from edgevlm.runtime.scheduler import ScheduledBatch
from edgevlm.runtime.sequence import Sequence
from edgevlm.runtime.step_inputs import attention_bias, decoder_step
from edgevlm.runtime.types import SamplingParams


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


def make_seq(ids: list[int], image_at: list[int], delta: int = 0) -> Sequence:
    array = np.array(ids, np.int64)
    positions = np.stack([np.arange(len(ids))] * 3) + np.array([[0], [10], [20]])
    prompt = Prompt(array, positions, delta, (), np.array(image_at, np.int64))
    params = SamplingParams()
    seq = Sequence("s", prompt, params, SamplingState.create(params, array), Detokenizer(str), 8, frozenset())
    seq.image_embeds = np.array([[100.0, 100.0], [200.0, 200.0]], np.float32)
    return seq


def test_prefill_chunk_places_image_embeddings() -> None:
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    seq = make_seq([1, 2, 3, 9, 9, 4], image_at=[3, 4])
    seq.num_cached = 2
    step = decoder_step(ScheduledBatch(True, (seq,), 0, (3,)), EmbedTable(table), np.dtype(np.float32))
    np.testing.assert_array_equal(step.inputs_embeds[0], [[6, 7], [100, 100], [200, 200]][:3])
    np.testing.assert_array_equal(step.position_ids[:, 0], [[2, 3, 4], [12, 13, 14], [22, 23, 24]])
    assert step.logits_index.tolist() == [2] and step.starts.tolist() == [2]


def test_decode_positions_continue_from_delta() -> None:
    table = np.zeros((10, 2), np.float32)
    seq = make_seq([1, 2, 3], image_at=[], delta=-7)
    seq.num_cached = 5
    seq.output_ids = [4, 5, 6]
    step = decoder_step(ScheduledBatch(False, (seq,), 3, (1,)), EmbedTable(table), np.dtype(np.float32))
    assert step.position_ids[:, 0, 0].tolist() == [-2, -2, -2]
    assert step.first_row == 3 and step.past == 5
