"""AsyncEngine: streams, cancellation by closing a stream, overload, drain on stop, errors per request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgevlm.demo.questions import heldout_set
from edgevlm.runtime.async_engine import AsyncEngine
from edgevlm.runtime.demo_answers import sample_request
from edgevlm.runtime.engine import Engine
from edgevlm.runtime.types import (
    EngineOverloaded,
    EngineStopped,
    GenerationRequest,
    Message,
    RequestRejected,
    SamplingParams,
    TextPart,
)


@pytest.fixture(scope="module")
def engine(bundle_dir: Path) -> Engine:
    return Engine.from_bundle(bundle_dir, max_batch=4, max_queue=4)


def long_request(request_id: str, tokens: int = 40) -> GenerationRequest:
    params = SamplingParams(max_tokens=tokens, min_tokens=tokens)
    return GenerationRequest(request_id, (Message("user", (TextPart("describe the image."),)),), params)


async def collect(stream) -> list:
    return [event async for event in stream]


def test_streams_match_the_blocking_engine(engine: Engine) -> None:
    samples = heldout_set(6)
    expected = [r.text for r in engine.generate([sample_request(s, f"x{i}") for i, s in enumerate(samples)])]

    async def main() -> list[str]:
        front = AsyncEngine(engine)
        await front.start()
        streams = [front.submit(sample_request(s, f"a{i}")) for i, s in enumerate(samples)]
        events = await asyncio.gather(*(collect(s) for s in streams))
        await front.stop(drain_timeout=5)
        for stream_events in events:
            assert stream_events[-1].finish_reason in ("stop", "length")
            assert all(e.finish_reason is None for e in stream_events[:-1])
            assert stream_events[-1].usage is not None
        return ["".join(e.text for e in stream_events) for stream_events in events]

    assert asyncio.run(main()) == expected


def test_closing_a_stream_cancels_and_frees_kv(engine: Engine) -> None:
    async def main() -> None:
        front = AsyncEngine(engine)
        await front.start()
        stream = front.submit(long_request("c1"))
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.aclose()
        for _ in range(200):
            if front.stats().num_running == 0:
                break
            await asyncio.sleep(0.01)
        stats = front.stats()
        assert (stats.num_running, stats.kv_tokens_used) == (0, 0)
        assert stats.num_cancelled >= 1
        await front.stop(drain_timeout=1)

    asyncio.run(main())


def test_overload_rejection_and_stop(engine: Engine) -> None:
    async def main() -> None:
        front = AsyncEngine(engine)
        with pytest.raises(EngineStopped):
            front.submit(long_request("early"))
        await front.start()
        # Long enough that the queued half cannot finish inside the drain window on any machine.
        streams = [front.submit(long_request(f"q{i}", 600)) for i in range(8)]  # 4 rows + 4 queued
        with pytest.raises(EngineOverloaded) as info:
            front.submit(long_request("one-too-many"))
        assert info.value.retry_after >= 1
        with pytest.raises(RequestRejected):
            front.submit(GenerationRequest("bad", (Message("user", (TextPart("<|image|>"),)),)))
        with pytest.raises(RequestRejected, match="already running"):
            front.submit(long_request("q0"))
        await front.stop(drain_timeout=0.05)  # too short to finish: the rest is cancelled
        reasons = [(await collect(s))[-1].finish_reason for s in streams]
        assert set(reasons) <= {"length", "cancelled"} and "cancelled" in reasons
        with pytest.raises(EngineStopped):
            front.submit(long_request("late"))
        stats = front.stats()
        assert (stats.num_running, stats.num_waiting, stats.kv_tokens_used) == (0, 0, 0)

    asyncio.run(main())


def test_stop_drains_running_requests(engine: Engine) -> None:
    async def main() -> list:
        front = AsyncEngine(engine)
        await front.start()
        streams = [front.submit(long_request(f"d{i}", 6)) for i in range(3)]
        await front.stop(drain_timeout=60)
        return [(await collect(s))[-1].finish_reason for s in streams]

    assert asyncio.run(main()) == ["length"] * 3


def test_a_reader_that_falls_behind_gets_the_backlog_as_one_event(engine: Engine) -> None:
    request = long_request("slow", tokens=40)
    params = SamplingParams(max_tokens=40, min_tokens=40, logprobs=True)
    request = GenerationRequest("slow", request.messages, params)
    expected = engine.generate([GenerationRequest("slow-ref", request.messages, params)])[0].text

    async def main() -> list:
        front = AsyncEngine(engine)
        await front.start()
        stream = front.submit(request)
        await asyncio.sleep(0.5)  # the engine runs ahead while nobody reads
        events = await collect(stream)
        await front.stop(drain_timeout=5)
        return events

    events = asyncio.run(main())
    assert len(events) < 40  # merged, not one event per token
    assert "".join(e.text for e in events) == expected
    assert sum(len(e.logprobs) for e in events) == 40  # every token's logprob survives the merge
    assert sum(e.steps for e in events) == 40  # and the count of engine steps behind them
    assert events[-1].finish_reason == "length" and events[-1].usage.completion_tokens == 40
    assert all(e.finish_reason is None for e in events[:-1])


def test_under_load_each_stream_hands_out_at_most_one_event_per_interval(engine: Engine) -> None:
    interval = 0.05
    lengths = (40, 80)  # the first stream ends while the second is still open: it is paced throughout
    requests = [long_request(f"iv{i}", tokens=n) for i, n in enumerate(lengths)]
    expected = [r.text for r in engine.generate([long_request(f"ref{i}", tokens=n) for i, n in enumerate(lengths)])]

    async def read(stream) -> list[tuple[float, object]]:
        loop = asyncio.get_running_loop()
        return [(loop.time(), event) async for event in stream]

    async def main() -> list:
        front = AsyncEngine(engine, stream_interval_s=interval)
        await front.start()
        streams = [front.submit(r) for r in requests]
        timed = await asyncio.gather(*(read(s) for s in streams))
        await front.stop(drain_timeout=5)
        return timed

    results = asyncio.run(main())
    for timed, text, n in zip(results, expected, lengths, strict=True):
        events = [e for _, e in timed]
        assert "".join(e.text for e in events) == text and sum(e.steps for e in events) == n
        assert events[-1].finish_reason == "length"
    shorter = results[0]
    assert 2 <= len(shorter) < lengths[0]
    gaps = [b - a for (a, _), (b, _) in zip(shorter[:-2], shorter[1:-1], strict=True)]  # the last is never held
    assert all(gap >= interval * 0.9 for gap in gaps), gaps


def test_a_stream_alone_is_not_held_back(engine: Engine) -> None:
    async def main() -> list:
        front = AsyncEngine(engine, stream_interval_s=10.0)  # would take minutes if it applied
        await front.start()
        events = await asyncio.wait_for(collect(front.submit(long_request("alone", tokens=20))), 30)
        await front.stop(drain_timeout=5)
        return events

    events = asyncio.run(main())
    assert sum(e.steps for e in events) == 20 and events[-1].finish_reason == "length"


def test_a_negative_stream_interval_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="stream_interval_s"):
        AsyncEngine(engine, stream_interval_s=-1)
