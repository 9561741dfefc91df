"""server/metrics.py's request timer: inter-token latency stays per token when a stream's backlog
arrives as one event."""

from __future__ import annotations

from edgevlm.server.metrics import PREFIX, Metrics, RequestTimer


def inter_token_count(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value(f"{PREFIX}inter_token_latency_seconds_count") or 0.0


def test_a_joined_backlog_counts_each_of_its_tokens() -> None:
    metrics = Metrics()
    timer = RequestTimer()
    timer.on_event(True, metrics)  # the first token: time to first token, no gap yet
    assert inter_token_count(metrics) == 0
    timer.on_event(True, metrics)  # one token
    assert inter_token_count(metrics) == 1
    timer.on_event(True, metrics, steps=4)  # four tokens that queued while the reader was busy
    assert inter_token_count(metrics) == 5
    timer.on_event(False, metrics, steps=2)  # no text (held-back bytes): no token seen
    assert inter_token_count(metrics) == 5
