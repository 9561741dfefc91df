"""Next-token choice from a step's logits, in numpy: penalties, greedy or temperature/top-k/top-p
sampling with a per-request generator, and optional log-probabilities.

Order (as vLLM / HF): suppressed tokens -> repetition penalty (prompt + output tokens) ->
presence/frequency penalties (output tokens, OpenAI's definition) -> greedy argmax, or
temperature -> top-k -> top-p (on the renormalised top-k set) -> one uniform draw.
Log-probabilities are the model's own distribution (raw logits), as OpenAI reports them.
Each sampled token consumes exactly one draw from the request's generator, so a seeded request
repeats its tokens whatever else shares its batch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from edgevlm.runtime.types import SamplingParams

# Top-p first tries the nucleus inside the NUCLEUS_PROBE most likely tokens (argpartition, O(V));
# only if their mass is below top_p does it sort the whole vocabulary. Exact either way: the
# probe holds the largest probabilities, so a nucleus found inside it is the true nucleus.
NUCLEUS_PROBE = 1024


@dataclass(slots=True)
class SamplingState:
    """What sampling remembers about one request."""

    params: SamplingParams
    rng: np.random.Generator
    prompt_tokens: np.ndarray  # unique prompt token ids (repetition penalty)
    output_counts: Counter = field(default_factory=Counter)

    @classmethod
    def create(cls, params: SamplingParams, prompt_ids: np.ndarray) -> SamplingState:
        # seed None: fresh OS entropy, so unseeded requests differ.
        return cls(params, np.random.default_rng(params.seed), np.unique(np.asarray(prompt_ids, np.int64)))

    def record(self, token_id: int) -> None:
        self.output_counts[token_id] += 1


@dataclass(frozen=True, slots=True)
class TokenChoice:
    token_id: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


def sample(
    logits: np.ndarray, states: list[SamplingState], suppress: list[tuple[int, ...]]
) -> list[TokenChoice]:
    """One token per row. `suppress[b]` lists ids row b may not produce now (EOS before min_tokens).
    # logits: [batch, vocab] float32"""
    assert logits.shape[0] == len(states) == len(suppress)
    plain = [b for b, st in enumerate(states) if _plain_greedy(st)]
    choices: dict[int, TokenChoice] = {}
    if len(plain) > 1:
        # Rows that only take the argmax (the common decode step) share one vectorised call: the
        # same tokens as row by row, without a Python round per row.
        scores = logits[plain]  # a copy (fancy index): suppression may write into it
        for i, b in enumerate(plain):
            if suppress[b]:
                scores[i, list(suppress[b])] = -np.inf
        choices = {b: TokenChoice(int(t)) for b, t in zip(plain, scores.argmax(axis=1).tolist(), strict=True)}
    return [choices.get(b) or _sample_row(logits[b], states[b], suppress[b]) for b in range(len(states))]


def _plain_greedy(state: SamplingState) -> bool:
    """Greedy with nothing that changes scores but suppression, and no logprobs to report."""
    p = state.params
    return p.is_greedy and not p.logprobs and p.repetition_penalty == 1.0 and not _count_penalised(state)


def _count_penalised(state: SamplingState) -> bool:
    """Whether presence/frequency penalties change this row's scores now (only once it has output)."""
    return bool(state.output_counts) and bool(state.params.presence_penalty or state.params.frequency_penalty)


def _sample_row(raw: np.ndarray, state: SamplingState, suppress: tuple[int, ...]) -> TokenChoice:
    params = state.params
    scores = apply_penalties(raw, state, suppress)
    token = int(np.argmax(scores)) if params.is_greedy else _draw(scores, params, state.rng)
    if not params.logprobs:
        return TokenChoice(token)
    logprobs = log_softmax(raw)
    return TokenChoice(token, float(logprobs[token]), _top(logprobs, params.top_logprobs))


def apply_penalties(raw: np.ndarray, state: SamplingState, suppress: tuple[int, ...]) -> np.ndarray:
    """# raw: [vocab] -> [vocab] (a copy only when something changes)"""
    params = state.params
    scores = raw
    if suppress or params.repetition_penalty != 1.0 or _count_penalised(state):
        scores = raw.astype(np.float32, copy=True)
    if params.repetition_penalty != 1.0:
        seen = state.prompt_tokens
        if state.output_counts:
            seen = np.union1d(seen, np.fromiter(state.output_counts, np.int64))
        values = scores[seen]
        # HF/CTRL rule: shrink positive logits, push negative ones further down.
        penalty = params.repetition_penalty
        scores[seen] = np.where(values > 0, values / penalty, values * penalty)
    if _count_penalised(state):
        ids = np.fromiter(state.output_counts.keys(), np.int64)
        counts = np.fromiter(state.output_counts.values(), np.float32)
        scores[ids] -= params.frequency_penalty * counts + params.presence_penalty
    if suppress:
        scores[list(suppress)] = -np.inf
    return scores


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - np.max(x)
    return shifted - np.log(np.sum(np.exp(shifted)))


def _top(logprobs: np.ndarray, n: int) -> tuple[tuple[int, float], ...]:
    if n == 0:
        return ()
    ids = np.argpartition(-logprobs, n - 1)[:n]
    ids = ids[np.argsort(-logprobs[ids], kind="stable")]
    return tuple((int(i), float(logprobs[i])) for i in ids)


def _draw(scores: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    probs = np.exp(log_softmax(scores / params.temperature))
    candidates, mass = _candidates(probs, params.top_k, params.top_p)
    u = rng.random()
    if candidates is None:  # the whole vocabulary, in index order: no sort needed
        index = int(np.searchsorted(np.cumsum(probs), u * mass, side="right"))
        return min(index, len(probs) - 1)
    cumulative = np.cumsum(probs[candidates])
    index = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    return int(candidates[min(index, len(candidates) - 1)])


def _candidates(probs: np.ndarray, top_k: int, top_p: float) -> tuple[np.ndarray | None, float]:
    """Token ids that may be drawn, most likely first (None: every token), and their total mass."""
    vocab = len(probs)
    if top_k == 0 or top_k >= vocab:
        if top_p >= 1.0:
            return None, float(probs.sum())
        pool = _sorted_top(probs, min(NUCLEUS_PROBE, vocab))
        if probs[pool].sum() < top_p:
            pool = np.argsort(-probs, kind="stable")
        return _nucleus(pool, probs[pool] / probs.sum(), top_p), 0.0
    pool = _sorted_top(probs, top_k)
    if top_p >= 1.0:
        return pool, 0.0
    return _nucleus(pool, probs[pool] / probs[pool].sum(), top_p), 0.0


def _sorted_top(probs: np.ndarray, k: int) -> np.ndarray:
    ids = np.argpartition(-probs, k - 1)[:k] if k < len(probs) else np.arange(len(probs))
    return ids[np.argsort(-probs[ids], kind="stable")]


def _nucleus(pool: np.ndarray, shares: np.ndarray, top_p: float) -> np.ndarray:
    """The shortest most-likely-first prefix whose share reaches top_p (at least one token)."""
    cumulative = np.cumsum(shares)
    count = int(np.searchsorted(cumulative, top_p, side="left")) + 1
    return pool[: min(count, len(pool))]
