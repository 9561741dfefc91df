"""The HTTP surface against a fake engine: shapes, errors, streaming, cancellation, metrics."""

import json
import logging
import re
import time

import httpx
import pytest

PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def chat(text: str = "hello there", **fields) -> dict:
    content = [{"type": "image_url", "image_url": {"url": PIXEL}}, {"type": "text", "text": text}]
    return {"model": "fake-vlm", "messages": [{"role": "user", "content": content}]} | fields


def sse_payloads(response: httpx.Response) -> list:
    events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def test_non_stream_shape(fake_server):
    with fake_server() as (base, engine):
        r = httpx.post(f"{base}/v1/chat/completions", json=chat(max_tokens=50))
        body = r.json()
        assert r.status_code == 200 and body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
        assert body["model"] == "fake-vlm" and isinstance(body["created"], int)
        (choice,) = body["choices"]
        assert choice["message"] == {"role": "assistant", "content": "echo: hello there [images 1x1] ", "refusal": None}
        assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
        assert body["usage"] == {"prompt_tokens": 66, "completion_tokens": 4, "total_tokens": 70}
        assert r.headers["x-request-id"] == body["id"]
        r = httpx.post(f"{base}/api/v1/chat/completions", json=chat(max_tokens=2))
        assert r.json()["choices"][0]["finish_reason"] == "length"


def test_stream_shape_with_and_without_usage(fake_server):
    with fake_server() as (base, _):
        plain = sse_payloads(httpx.post(f"{base}/v1/chat/completions", json=chat(stream=True)))
        assert plain[-1] == "[DONE]"
        chunks = plain[:-1]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
        assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert text == "echo: hello there [images 1x1] "
        with_usage = sse_payloads(
            httpx.post(f"{base}/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
        )
        assert with_usage[-2]["choices"] == [] and with_usage[-2]["usage"]["completion_tokens"] == 4
        assert all(c["usage"] is None for c in with_usage[:-2])


def test_stop_logprobs_and_vqa(fake_server):
    with fake_server() as (base, engine):
        r = httpx.post(f"{base}/v1/chat/completions", json=chat("one two three", stop=["two"]))
        assert r.json()["choices"][0]["message"]["content"] == "echo: one "
        r = httpx.post(f"{base}/v1/chat/completions", json=chat("a", logprobs=True, top_logprobs=1))
        content = r.json()["choices"][0]["logprobs"]["content"]
        assert content[0]["token"] == "echo: " and content[0]["top_logprobs"][0]["token"] == "x"
        r = httpx.post(f"{base}/vqa", json={"image": PIXEL.split(",", 1)[1], "question": "colour?"})
        assert r.json() == {"answer": "echo: colour? [images 1x1] "}
        r = httpx.post(f"{base}/vqa", json={"image": "bm90IGFuIGltYWdl", "question": "colour?"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "image"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[]", 400, "invalid_json"),
        (json.dumps({"model": "fake-vlm"}).encode(), 400, "invalid_value"),
        (json.dumps(chat(n=3)).encode(), 400, "unsupported_parameter"),
        (json.dumps(chat(response_format={"type": "json_schema"})).encode(), 400, "unsupported_parameter"),
        (json.dumps(chat() | {"model": "gpt-4o"}).encode(), 404, "model_not_found"),
        (json.dumps(chat("reject me")).encode(), 400, "request_rejected"),
        (b"x" * 5000, 413, "payload_too_large"),
    ],
)
def test_errors_are_openai_shaped(fake_server, content, status, code):
    with fake_server(max_body_bytes=4096) as (base, _):
        r = httpx.post(f"{base}/v1/chat/completions", content=content, headers={"content-type": "application/json"})
        assert r.status_code == status
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == code and error["message"]


def test_unknown_route_and_method(fake_server):
    with fake_server() as (base, _):
        r = httpx.get(f"{base}/v2/nothing")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        assert httpx.get(f"{base}/v1/chat/completions").status_code == 405
        assert httpx.get(f"{base}/v1/models/fake-vlm").json()["id"] == "fake-vlm"
        assert httpx.get(f"{base}/v1/models/other").status_code == 404


def test_api_key(fake_server):
    with fake_server(api_key="s3cret") as (base, _):
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/ready").status_code == 200
        assert httpx.get(f"{base}/").status_code == 200
        missing = httpx.post(f"{base}/v1/chat/completions", json=chat())
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        wrong = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{base}/metrics").status_code == 401
        ok = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_queue_full_is_429_with_retry_after(fake_server):
    with fake_server(engine={"capacity": 1, "delay": 0.05}) as (base, _), httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{base}/v1/chat/completions", json=chat("long", stream=True)) as busy:
            lines = busy.iter_lines()  # kept referenced: a collected iterator closes the response
            next(lines)
            r = httpx.post(f"{base}/v1/chat/completions", json=chat())
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        assert r.json()["error"]["type"] == "rate_limit_error"


def test_not_ready_is_503_then_ready(fake_server):
    with fake_server(engine={"start_delay": 5.0}, wait=False) as (base, _):
        assert httpx.get(f"{base}/health").status_code == 200
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 503 and "retry-after" in ready.headers
        r = httpx.post(f"{base}/v1/chat/completions", json=chat())
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready" and r.headers["retry-after"]
        deadline = time.monotonic() + 10
        while httpx.get(f"{base}/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_failed_load_is_reported(fake_server):
    with fake_server(engine={"fail_start": True}, wait=False) as (base, _):
        time.sleep(0.3)
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 503 and "bundle is corrupt" in ready.json()["error"]


def test_error_after_stream_began(fake_server):
    with fake_server() as (base, _):
        payloads = sse_payloads(httpx.post(f"{base}/v1/chat/completions", json=chat("fail mid", stream=True)))
        assert payloads[-1] == "[DONE]"
        error = payloads[-2]["error"]
        assert error["code"] == "generation_failed" and "device lost" in error["message"]
        r = httpx.post(f"{base}/v1/chat/completions", json=chat("fail mid"))
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_and_frees_kv(fake_server, stream):
    with fake_server(engine={"delay": 0.05}) as (base, engine):
        before = metric(base, "edgevlm:num_requests_cancelled_total")
        with httpx.Client(timeout=30) as client:
            if stream:
                with client.stream("POST", f"{base}/v1/chat/completions", json=chat("long", stream=True)) as r:
                    lines = r.iter_lines()
                    for _ in range(6):
                        next(lines)
                    assert metric(base, "edgevlm:kv_cache_tokens_used") > 0
            else:
                with pytest.raises(httpx.ReadTimeout):
                    client.post(f"{base}/v1/chat/completions", json=chat("long"), timeout=0.5)
        deadline = time.monotonic() + 10
        while metric(base, "edgevlm:num_requests_cancelled_total") == before:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert metric(base, "edgevlm:kv_cache_tokens_used") == 0
        assert metric(base, "edgevlm:num_requests_running") == 0
        assert engine.cancelled == 1


def test_probes_metrics_models_openapi_and_page(fake_server):
    with fake_server() as (base, _):
        httpx.post(f"{base}/v1/chat/completions", json=chat())
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        assert httpx.get(f"{base}/ready").json() == {"status": "ready", "model": "fake-vlm"}
        models = httpx.get(f"{base}/v1/models").json()
        assert models["object"] == "list" and models["data"][0]["id"] == "fake-vlm"
        text = httpx.get(f"{base}/metrics").text
        for name in (
            "edgevlm:num_requests_running",
            "edgevlm:num_requests_waiting",
            "edgevlm:kv_cache_usage_perc",
            "edgevlm:image_cache_hits_total",
            "edgevlm:prefix_cache_hits_total",
            "edgevlm:prefix_cache_tokens_total",
            "edgevlm:prompt_tokens_total",
            "edgevlm:generation_tokens_total",
            "edgevlm:time_to_first_token_seconds_bucket",
            "edgevlm:inter_token_latency_seconds_bucket",
            "edgevlm:request_queue_time_seconds_bucket",
            "edgevlm:e2e_request_latency_seconds_bucket",
            "edgevlm:num_requests_cancelled_total",
        ):
            assert name in text, name
        assert metric(base, "edgevlm:generation_tokens_total") == 4
        spec = httpx.get(f"{base}/openapi.json").json()
        assert "/v1/chat/completions" in spec["paths"] and "ChatCompletionRequest" in spec["components"]["schemas"]
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "<title>edgevlm</title>" in page.text
        assert httpx.get(f"{base}/static/app.js").headers["content-type"].startswith("text/javascript")
        config = httpx.get(f"{base}/api/config").json()
        assert config["model"] == "fake-vlm" and config["max_image_bytes"] == 20 * 1024 * 1024


def test_cors(fake_server):
    with fake_server(cors_origins=("https://app.example",)) as (base, _):
        r = httpx.options(
            f"{base}/v1/chat/completions",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.get(f"{base}/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_one_log_line_per_request(fake_server, caplog):
    caplog.set_level(logging.INFO, logger="edgevlm.server.access")
    with fake_server() as (base, _):
        caplog.clear()
        reply = httpx.post(f"{base}/v1/chat/completions", json=chat(stream=True)).text
        httpx.get(f"{base}/nope")
    lines = [r.getMessage() for r in caplog.records if r.name == "edgevlm.server.access"]
    assert len(lines) == 2
    request_id = json.loads(reply.split("\n\n")[0][6:])["id"]
    assert re.fullmatch(
        rf"POST /v1/chat/completions 200 \d+ms id={request_id} finish=stop prompt_tokens=66 "
        r"completion_tokens=4 ttft=\d+ms",
        lines[0],
    )
    assert re.fullmatch(r"GET /nope 404 \d+ms", lines[1])
