"""The real stack: `edgevlm serve` on a demo bundle, driven by the official openai SDK."""

import base64
import json
import math
import signal
import struct
import threading
import time
import zlib
from io import BytesIO
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from edgevlm.demo.questions import is_correct, make_sample
from edgevlm.demo.shapes import render

pytestmark = pytest.mark.slow


def png_url(image) -> str:
    buffer = BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def ask(sample) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": png_url(render(sample.scene))}}]
    return [{"role": "user", "content": [*content, {"type": "text", "text": sample.question}]}]


def client_for(served, **kwargs) -> openai.OpenAI:
    options = {"api_key": served.api_key or "none", "max_retries": 0, "timeout": 120} | kwargs
    return openai.OpenAI(base_url=f"{served.url}/v1", **options)


def model_of(served) -> str:
    return client_for(served).models.list().data[0].id


def metric(served, name: str) -> float:
    headers = {"Authorization": f"Bearer {served.api_key}"} if served.api_key else {}
    for line in httpx.get(f"{served.url}/metrics", headers=headers).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


SAMPLE = make_sample(11, "colour", "en")


def test_non_stream_typed(live_server):
    client = client_for(live_server)
    reply = client.chat.completions.create(model=model_of(live_server), messages=ask(SAMPLE), max_tokens=16)
    assert isinstance(reply, ChatCompletion) and reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens >= 1


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_matches_non_stream(live_server, include_usage):
    client = client_for(live_server)
    model = model_of(live_server)
    whole = client.chat.completions.create(model=model, messages=ask(SAMPLE), max_tokens=16)
    options = {"include_usage": True} if include_usage else None
    chunks = list(
        client.chat.completions.create(
            model=model, messages=ask(SAMPLE), max_tokens=16, stream=True, stream_options=options
        )
    )
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    else:
        assert all(c.usage is None for c in chunks)


def test_multi_turn_stop_and_seed(live_server):
    client = client_for(live_server)
    model = model_of(live_server)
    first = client.chat.completions.create(model=model, messages=ask(SAMPLE), max_tokens=8)
    answer = first.choices[0].message.content
    turns = [*ask(SAMPLE), {"role": "assistant", "content": answer}, {"role": "user", "content": "How many shapes?"}]
    follow = client.chat.completions.create(model=model, messages=turns, max_tokens=8)
    assert follow.usage.prompt_tokens > first.usage.prompt_tokens
    if len(answer) >= 2:
        cut = client.chat.completions.create(model=model, messages=ask(SAMPLE), max_tokens=8, stop=[answer[1:]])
        assert cut.choices[0].message.content == answer[:1] and cut.choices[0].finish_reason == "stop"
    sampled = [
        client.chat.completions.create(model=model, messages=ask(SAMPLE), max_tokens=12, temperature=1.0, seed=1234)
        for _ in range(2)
    ]
    assert sampled[0].choices[0].message.content == sampled[1].choices[0].message.content


def truncated_png() -> bytes:
    buffer = BytesIO()
    render(SAMPLE.scene).save(buffer, "PNG")
    return buffer.getvalue()[:200]


def bomb_png(side: int = 30000) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 99)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64," + base64.b64encode(truncated_png()).decode(),
        "data:image/png;base64," + base64.b64encode(bomb_png()).decode(),
        "data:image/png;base64," + base64.b64encode(b"%PDF-1.4 definitely not an image").decode(),
        "data:image/png;base64,!!!!not*base64!!!!",
    ],
    ids=["truncated-png", "bomb-30000x30000", "not-an-image", "bad-base64"],
)
def test_bad_images_are_400(live_server, url):
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    with pytest.raises(openai.BadRequestError) as info:
        client_for(live_server).chat.completions.create(model=model_of(live_server), messages=messages)
    assert info.value.status_code == 400 and info.value.code == "invalid_image"


def test_sdk_exceptions(live_server):
    model = model_of(live_server)
    with pytest.raises(openai.AuthenticationError):
        client_for(live_server, api_key="wrong").chat.completions.create(model=model, messages=ask(SAMPLE))
    with pytest.raises(openai.NotFoundError):
        client_for(live_server).chat.completions.create(model="no-such-model", messages=ask(SAMPLE))
    with pytest.raises(openai.BadRequestError):
        client_for(live_server).chat.completions.create(model=model, messages=ask(SAMPLE), n=2)
    assert httpx.get(f"{live_server.url}/health").status_code == 200


def one_row_budget_mb(bundle) -> float:
    """A KV budget that holds exactly one sequence (plus the engine's scratch row)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    arch = manifest["architecture"]
    itemsize = {"fp32": 4, "fp16": 2, "bf16": 2}[manifest["dtype"]]
    per_row = arch["num_layers"] * 2 * arch["num_kv_heads"] * arch["head_dim"] * itemsize
    per_row *= manifest["limits"]["max_seq_len"]
    return math.ceil(2.5 * per_row / (1024 * 1024) * 10) / 10


def long_body(model: str, tokens: int = 400) -> dict:
    return {"model": model, "messages": ask(SAMPLE), "max_tokens": tokens, "min_tokens": tokens, "stream": True}


def test_queue_full_is_rate_limit_error(serve, demo_bundle):
    with serve("--kv-cache-mb", str(one_row_budget_mb(demo_bundle)), "--max-queue", "0") as served:
        model = model_of(served)
        with (
            httpx.Client(timeout=120) as http,
            http.stream("POST", f"{served.url}/v1/chat/completions", json=long_body(model)) as busy,
        ):
            lines = busy.iter_lines()
            next(lines)
            with pytest.raises(openai.RateLimitError) as info:
                client_for(served).chat.completions.create(model=model, messages=ask(SAMPLE), max_tokens=4)
            assert int(info.value.response.headers["retry-after"]) >= 1


def test_disconnect_mid_stream_frees_kv(live_server):
    model = model_of(live_server)
    before = metric(live_server, "edgevlm:num_requests_cancelled_total")
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    url = f"{live_server.url}/v1/chat/completions"
    with (
        httpx.Client(timeout=120, headers=headers) as http,
        http.stream("POST", url, json=long_body(model)) as response,
    ):
        lines = response.iter_lines()
        for _ in range(8):
            next(lines)
        assert metric(live_server, "edgevlm:kv_cache_tokens_used") > 0
    deadline = time.monotonic() + 30
    while (
        metric(live_server, "edgevlm:kv_cache_tokens_used") > 0
        or metric(live_server, "edgevlm:num_requests_cancelled_total") == before
    ):
        assert time.monotonic() < deadline, "KV not freed after the client went away"
        time.sleep(0.1)
    assert metric(live_server, "edgevlm:num_requests_running") == 0


def test_sigterm_drains_in_flight_then_exits(serve):
    with serve("--grace-period", "60") as served:
        model = model_of(served)
        events: list[str] = []
        started = threading.Event()

        def stream() -> None:
            with (
                httpx.Client(timeout=120) as http,
                http.stream("POST", f"{served.url}/v1/chat/completions",
                            json={**long_body(model, 120), "stream_options": {"include_usage": True}}) as response,
            ):
                for line in response.iter_lines():
                    if line:
                        events.append(line)
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        served.process.send_signal(signal.SIGTERM)
        reader.join(120)
        assert served.process.wait(60) == 0
        assert events[-1] == "data: [DONE]"
        finals = [json.loads(e[6:]) for e in events[:-1]]
        # Every one of the 120 tokens was generated and sent: a reader that falls behind gets
        # queued tokens joined into fewer chunks, so the usage chunk counts them, not the chunks.
        assert finals[-1]["choices"] == [] and finals[-1]["usage"]["completion_tokens"] == 120
        assert finals[-2]["choices"][0]["finish_reason"] == "length"
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in finals if c["choices"])
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{served.url}/health", timeout=2)


def test_serving_process_never_loads_torch(live_server):
    maps = Path(f"/proc/{live_server.process.pid}/maps").read_text()
    assert "libtorch" not in maps


@pytest.mark.parametrize(
    ("qtype", "lang"),
    [("colour", "en"), ("count", "zh"), ("shape", "en"), ("box", "en"), ("colour", "zh")],
)
def test_demo_answers_are_correct(live_server, trained_demo, known_correct, qtype, lang):
    sample = known_correct(qtype, lang)
    client = client_for(live_server)
    reply = client.chat.completions.create(model=model_of(live_server), messages=ask(sample), max_tokens=64)
    answer = reply.choices[0].message.content
    assert is_correct(sample, answer), (sample.question, sample.answer, answer)
