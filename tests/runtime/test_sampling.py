"""Sampling: greedy, temperature/top-k/top-p, seeds, penalties, suppression, logprobs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edgevlm.runtime import sampling
from edgevlm.runtime.sampling import SamplingState, apply_penalties, log_softmax, sample
from edgevlm.runtime.types import SamplingParams

LOGITS = np.array([1.0, 3.0, 2.0, 0.5, -1.0, 2.9], np.float32)


def state(prompt=(), **params) -> SamplingState:
    return SamplingState.create(SamplingParams(**params), np.array(prompt, np.int64))


def draws(st: SamplingState, count: int, logits: np.ndarray = LOGITS) -> list[int]:
    return [sample(logits[None], [st], [()])[0].token_id for _ in range(count)]


def test_greedy_is_argmax_and_top_k_1_is_greedy() -> None:
    assert draws(state(), 3) == [1, 1, 1]
    assert draws(state(temperature=1.5, top_k=1, seed=3), 5) == [1] * 5


def test_seeded_sampling_repeats_and_seeds_differ() -> None:
    a = draws(state(temperature=1.0, seed=7), 50)
    b = draws(state(temperature=1.0, seed=7), 50)
    c = draws(state(temperature=1.0, seed=8), 50)
    assert a == b and a != c


def test_frequencies_follow_softmax() -> None:
    st = state(temperature=1.0, seed=0)
    counts = Counter(draws(st, 4000))
    expected = np.exp(log_softmax(LOGITS))
    for token, p in enumerate(expected):
        assert abs(counts[token] / 4000 - p) < 0.03


def test_top_k_and_top_p_restrict_the_pool() -> None:
    assert set(draws(state(temperature=5.0, top_k=2, seed=1), 300)) == {1, 5}
    # softmax: token 1 ~ 0.41, 5 ~ 0.37, 2 ~ 0.15: 0.7 needs exactly tokens 1 and 5
    assert set(draws(state(temperature=1.0, top_p=0.7, seed=1), 300)) == {1, 5}
    assert set(draws(state(temperature=1.0, top_p=0.8, seed=1), 300)) == {1, 2, 5}


def test_nucleus_probe_and_full_sort_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = np.random.default_rng(0).normal(size=5000).astype(np.float32)
    fast = draws(state(temperature=1.0, top_p=0.9, seed=4), 40, logits)
    monkeypatch.setattr(sampling, "NUCLEUS_PROBE", 8)  # probe too small: full-sort path
    slow = draws(state(temperature=1.0, top_p=0.9, seed=4), 40, logits)
    assert fast == slow


def test_repetition_penalty_follows_hf_rule() -> None:
    st = state(prompt=(1, 4), repetition_penalty=2.0)
    st.record(3)
    out = apply_penalties(LOGITS, st, ())
    np.testing.assert_allclose(out, [1.0, 1.5, 2.0, 0.25, -2.0, 2.9])
    assert LOGITS[1] == 3.0  # the input is not modified


def test_presence_and_frequency_penalties_count_output_only() -> None:
    st = state(prompt=(0,), presence_penalty=0.5, frequency_penalty=0.25)
    for token in (1, 1, 2):
        st.record(token)
    out = apply_penalties(LOGITS, st, ())
    np.testing.assert_allclose(out, LOGITS - np.array([0, 1.0, 0.75, 0, 0, 0], np.float32))


def test_suppressed_tokens_are_never_chosen() -> None:
    st = state()
    assert sample(LOGITS[None], [st], [(1, 5)])[0].token_id == 2


def test_logprobs_are_the_raw_distribution() -> None:
    choice = sample(LOGITS[None], [state(temperature=0.5, seed=0, logprobs=True, top_logprobs=2)], [()])[0]
    expected = log_softmax(LOGITS)
    assert choice.logprob == pytest.approx(expected[choice.token_id])
    assert [t for t, _ in choice.top] == [1, 5]
    assert choice.top[0][1] == pytest.approx(expected[1])


def test_batch_rows_are_independent() -> None:
    logits = np.stack([LOGITS, LOGITS[::-1].copy()])
    out = sample(logits, [state(), state()], [(), ()])
    assert [c.token_id for c in out] == [1, 4]


def test_greedy_rows_taken_together_match_each_row_alone() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 50)).astype(np.float32)
    kinds = [dict(), dict(), dict(temperature=0.7, seed=1), dict(repetition_penalty=1.3),
             dict(logprobs=True), dict(presence_penalty=1.0), dict(), dict(top_k=1, temperature=2.0)]
    suppress = [(), (int(np.argmax(logits[1])),), (), (), (), (), (3, 4), ()]

    def states() -> list[SamplingState]:
        made = [state(prompt=(1, 2), **k) for k in kinds]
        made[5].record(int(np.argmax(logits[5])))  # presence penalty now applies to row 5
        return made

    together = sample(logits, states(), suppress)
    alone = [sample(logits[b : b + 1], [st], [suppress[b]])[0] for b, st in enumerate(states())]
    assert together == alone
    assert together[1].token_id != int(np.argmax(logits[1]))  # suppression holds in the shared call
