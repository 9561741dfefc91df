"""Decoder inputs: token and image embeddings in their places, positions, and the step's derived bias."""

from __future__ import annotations

import numpy as np

from edgevlm.runtime.detokenizer import Detokenizer
from edgevlm.runtime.embed_table import EmbedTable
from edgevlm.runtime.preprocess import Prompt
from edgevlm.runtime.sampling import SamplingState
from edgevlm.runtime.scheduler import ScheduledBatch
from edgevlm.runtime.sequence import Sequence
from edgevlm.runtime.step_inputs import decoder_step
from edgevlm.runtime.types import SamplingParams


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


def test_a_row_alone_gets_its_own_unpadded_bias() -> None:
    table = np.zeros((10, 2), np.float32)
    a, b = make_seq([1, 2, 3, 4], image_at=[]), make_seq([1, 2], image_at=[])
    a.num_cached, b.num_cached = 1, 0
    step = decoder_step(ScheduledBatch(True, (a, b), 0, (3, 2)), EmbedTable(table), np.dtype(np.float32))
    assert step.attention_bias.shape == (2, 1, 3, 4) and step.past == 1
    row = step.row(1)
    assert row.seq == 2 and row.past == 0 and row.first_row == 1
    assert (row.attention_bias[0, 0] == 0).tolist() == [[True, False], [True, True]]
