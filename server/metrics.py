"""Prometheus metrics with vLLM's names under the `edgevlm:` prefix, one registry per app."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgevlm.runtime.types import EngineStats

PREFIX = "edgevlm:"
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


class EngineCollector(Collector):
    """Reads EngineStats at scrape time: running/waiting requests, KV usage, image-cache hits."""

    def __init__(self, stats: Callable[[], EngineStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        yield GaugeMetricFamily(f"{PREFIX}num_requests_running", "Requests in the running batch", stats.num_running)
        yield GaugeMetricFamily(f"{PREFIX}num_requests_waiting", "Requests waiting to run", stats.num_waiting)
        yield GaugeMetricFamily(f"{PREFIX}kv_cache_usage_perc", "KV cache usage (1 = full)", stats.kv_usage)
        yield GaugeMetricFamily(f"{PREFIX}kv_cache_tokens_used", "KV cache tokens in use", stats.kv_tokens_used)
        yield GaugeMetricFamily(f"{PREFIX}kv_cache_tokens_total", "KV cache capacity in tokens", stats.kv_tokens_total)
        queries = stats.image_cache_hits + stats.image_cache_misses
        yield CounterMetricFamily(f"{PREFIX}image_cache_hits", "Image embedding cache hits", stats.image_cache_hits)
        yield CounterMetricFamily(f"{PREFIX}image_cache_queries", "Image embedding cache lookups", queries)
        yield CounterMetricFamily(f"{PREFIX}prefix_cache_hits", "Prompts that reused a cached prefix's K/V",
                                  stats.prefix_cache_hits)
        yield CounterMetricFamily(f"{PREFIX}prefix_cache_tokens", "Prompt tokens whose prefill prefix reuse skipped",
                                  stats.prefix_cache_tokens)
        yield CounterMetricFamily(
            f"{PREFIX}engine_requests_cancelled", "Requests the engine cancelled", stats.num_cancelled
        )


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes & co. (Linux)
        self.prompt_tokens = Counter(f"{PREFIX}prompt_tokens", "Prefill tokens processed", registry=r)
        self.generation_tokens = Counter(f"{PREFIX}generation_tokens", "Tokens generated", registry=r)
        self.request_success = Counter(f"{PREFIX}request_success", "Finished requests", ["finished_reason"], registry=r)
        self.requests_cancelled = Counter(
            f"{PREFIX}num_requests_cancelled",
            "Requests cancelled by a client disconnect or abort",
            registry=r,
        )
        self.requests_failed = Counter(f"{PREFIX}num_requests_failed", "Requests that errored", ["code"], registry=r)
        self.ttft = Histogram(
            f"{PREFIX}time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS, registry=r
        )
        self.inter_token = Histogram(
            f"{PREFIX}inter_token_latency_seconds",
            "Time between output tokens",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            f"{PREFIX}request_queue_time_seconds",
            "Arrival until the engine produced its first event (queue wait + prefill)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            f"{PREFIX}e2e_request_latency_seconds",
            "Arrival until the last token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def watch_engine(self, stats: Callable[[], EngineStats | None]) -> None:
        self.registry.register(EngineCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class RequestTimer:
    """Timestamps of one generation, for the histograms and the request's log line."""

    arrival: float = field(default_factory=time.perf_counter)
    submitted: float | None = None
    first_event: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    chunks: int = 0

    def on_submitted(self) -> None:
        self.submitted = time.perf_counter()

    def on_event(self, has_text: bool, metrics: Metrics, steps: int = 1) -> None:
        """`steps`: engine steps the event covers. A joined backlog (a reader that fell behind)
        spreads its wait over its tokens, so the histogram stays per token, not per chunk."""
        now = time.perf_counter()
        if self.first_event is None:
            self.first_event = now
            metrics.queue_time.observe(now - self.arrival)
        if not has_text:
            return
        if self.first_token is None:
            self.first_token = now
            metrics.ttft.observe(now - self.arrival)
        elif self.last_token is not None:
            for _ in range(steps):  # steps >= 1: every event covers at least one engine step
                metrics.inter_token.observe((now - self.last_token) / steps)
        self.last_token = now
        self.chunks += 1

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    def elapsed(self) -> float:
        return time.perf_counter() - self.arrival
