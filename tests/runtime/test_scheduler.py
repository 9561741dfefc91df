"""Scheduler: FIFO admission by free rows, bounded queue, chunked prefill, prefill/decode interleave."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.runtime.detokenizer import Detokenizer
from edgevlm.runtime.kv_cache import RowTable
from edgevlm.runtime.preprocess import Prompt
from edgevlm.runtime.sampling import SamplingState
from edgevlm.runtime.scheduler import Scheduler, SchedulerConfig
from edgevlm.runtime.sequence import Sequence, Status
from edgevlm.runtime.types import EngineOverloaded, SamplingParams


def make_seq(name: str, prompt_len: int) -> Sequence:
    ids = np.zeros(prompt_len, np.int64)
    prompt = Prompt(ids, np.zeros((3, prompt_len), np.int64), 0, (), np.zeros(0, np.int64))
    params = SamplingParams()
    return Sequence(name, prompt, params, SamplingState.create(params, ids), Detokenizer(lambda ids: ""), 16,
                    frozenset({0}))


def run_step(scheduler: Scheduler, table: RowTable) -> tuple[bool, list[tuple[str, int]]]:
    """Schedule one step and book it as the engine would (no model)."""
    batch = scheduler.schedule()
    assert batch is not None
    assert [table.row(s) for s in batch.seqs] == list(range(batch.first_row, batch.first_row + len(batch.seqs)))
    for seq, count in zip(batch.seqs, batch.num_new, strict=True):
        seq.num_cached += count
        table.advance(seq, count)
        if batch.is_prefill and seq.prefill_remaining == 0:
            scheduler.prefill_done(seq)
            seq.output_ids.append(1)
        elif not batch.is_prefill:
            seq.output_ids.append(1)
    return batch.is_prefill, [(s.request_id, n) for s, n in zip(batch.seqs, batch.num_new, strict=True)]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="max_prefill_tokens"):
        SchedulerConfig(max_prefill_tokens=0)
    with pytest.raises(ValueError, match="max_queue"):
        SchedulerConfig(max_queue=-1)


def test_fifo_admission_by_free_rows() -> None:
    table = RowTable(2)
    scheduler = Scheduler(SchedulerConfig(max_queue=8, max_prefill_tokens=100), table)
    seqs = [make_seq(f"s{i}", 10) for i in range(4)]
    for seq in seqs:
        scheduler.add(seq)
    is_prefill, rows = run_step(scheduler, table)
    assert is_prefill and rows == [("s0", 10), ("s1", 10)]
    assert scheduler.num_waiting == 2 and scheduler.num_running == 2
    assert seqs[2].status is Status.WAITING
    scheduler.release(seqs[0])
    assert run_step(scheduler, table) == (False, [("s1", 1)])  # s2 is admitted into the freed row...
    assert seqs[2].status is Status.PREFILL and seqs[3].status is Status.WAITING
    assert run_step(scheduler, table) == (True, [("s2", 10)])  # ...and prefilled on the next step


def test_bounded_queue_overloads_with_retry_after() -> None:
    table = RowTable(1)
    scheduler = Scheduler(SchedulerConfig(max_queue=2), table)
    for i in range(3):  # one for the free row, two queued
        scheduler.add(make_seq(f"s{i}", 4))
    with pytest.raises(EngineOverloaded) as info:
        scheduler.add(make_seq("late", 4))
    assert 1.0 <= info.value.retry_after <= 60.0


def test_long_prompt_is_chunked_and_interleaved_with_decode() -> None:
    table = RowTable(4)
    scheduler = Scheduler(SchedulerConfig(max_prefill_tokens=8), table)
    old = make_seq("old", 4)
    scheduler.add(old)
    assert run_step(scheduler, table) == (True, [("old", 4)])
    newcomer = make_seq("new", 20)
    scheduler.add(newcomer)
    kinds = [run_step(scheduler, table) for _ in range(7)]
    assert kinds == [
        (False, [("old", 1)]),
        (True, [("new", 8)]),
        (False, [("old", 1)]),
        (True, [("new", 8)]),
        (False, [("old", 1)]),
        (True, [("new", 4)]),
        (False, [("old", 1), ("new", 1)]),
    ]


def test_prefill_batch_respects_padded_budget() -> None:
    table = RowTable(8)
    scheduler = Scheduler(SchedulerConfig(max_prefill_tokens=30), table)
    for i, length in enumerate([10, 5, 10, 7, 9]):
        scheduler.add(make_seq(f"s{i}", length))
    # Rows are padded to the first row's chunk (10): three rows fit 30 padded tokens.
    assert run_step(scheduler, table) == (True, [("s0", 10), ("s1", 5), ("s2", 10)])
    assert run_step(scheduler, table) == (False, [("s0", 1), ("s1", 1), ("s2", 1)])
    assert run_step(scheduler, table) == (True, [("s3", 7), ("s4", 7)])


def test_release_of_waiting_and_running() -> None:
    table = RowTable(1)
    scheduler = Scheduler(SchedulerConfig(), table)
    a, b = make_seq("a", 3), make_seq("b", 3)
    scheduler.add(a)
    scheduler.add(b)
    run_step(scheduler, table)
    assert scheduler.release(b) == [] and scheduler.num_waiting == 0
    scheduler.release(a)
    assert not scheduler.has_work and table.tokens_used == 0


def test_a_held_sequence_keeps_its_place_while_later_ones_start() -> None:
    table = RowTable(4)
    held = {"s1"}
    asked: list[str] = []

    def hold(seq: Sequence) -> bool:
        asked.append(seq.request_id)
        return seq.request_id in held

    scheduler = Scheduler(SchedulerConfig(max_queue=8, max_prefill_tokens=100), table, hold=hold)
    seqs = [make_seq(f"s{i}", 10) for i in range(3)]
    for seq in seqs:
        scheduler.add(seq)
    assert run_step(scheduler, table) == (True, [("s0", 10), ("s2", 10)])
    assert list(scheduler.waiting) == [seqs[1]] and seqs[1].status is Status.WAITING
    held.clear()  # what s1 waited for is computed: it starts at the next step, first in line
    late = make_seq("s3", 10)
    scheduler.add(late)
    run_step(scheduler, table)
    assert seqs[1].status is Status.PREFILL and table.row(seqs[1]) < table.row(late)
    assert asked == ["s0", "s1", "s2", "s1", "s3"]


def test_a_held_sequence_keeps_a_row_for_itself() -> None:
    table = RowTable(2)
    held = {"s1"}
    scheduler = Scheduler(SchedulerConfig(max_queue=8, max_prefill_tokens=100), table,
                          hold=lambda seq: seq.request_id in held)
    seqs = [make_seq(f"s{i}", 10) for i in range(3)]
    for seq in seqs:
        scheduler.add(seq)
    assert run_step(scheduler, table) == (True, [("s0", 10)])  # s2 does not take s1's row
    assert list(scheduler.waiting) == seqs[1:]
    held.clear()
    run_step(scheduler, table)
    assert seqs[1].status is Status.PREFILL and seqs[2].status is Status.WAITING
