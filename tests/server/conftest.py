"""A fake engine for schema/error tests, and a uvicorn server on loopback in a thread."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
import uvicorn

from edgevlm.runtime.types import (
    EngineOverloaded,
    EngineStats,
    GenerationRequest,
    ImagePart,
    RequestRejected,
    StreamEvent,
    TextPart,
    TokenLogprob,
    Usage,
)
from edgevlm.server.app import create_app
from edgevlm.server.config import ServerConfig

TOKENS_PER_IMAGE = 64


def fake_answer(request: GenerationRequest) -> list[str]:
    """The words of the reply: an echo of the last user text and the image sizes it saw."""
    last = request.messages[-1]
    text = " ".join(p.text for p in last.parts if isinstance(p, TextPart))
    sizes = [f"{p.image.width}x{p.image.height}" for m in request.messages for p in m.parts if isinstance(p, ImagePart)]
    words = ["echo:", *text.split()]
    if sizes:
        words.append(f"[images {' '.join(sizes)}]")
    if "long" in text:
        words += [f"w{i}" for i in range(10_000)]
    return [w + " " for w in words]


def prompt_tokens(request: GenerationRequest) -> int:
    count = 0
    for message in request.messages:
        for part in message.parts:
            count += TOKENS_PER_IMAGE if isinstance(part, ImagePart) else len(part.text.split())
    return count


@dataclass
class FakeEngine:
    """Implements the server's Engine protocol; one word per step, `delay` seconds apart."""

    delay: float = 0.0
    capacity: int = 4
    kv_total: int = 4096
    start_delay: float = 0.0
    fail_start: bool = False
    requests: list[GenerationRequest] = field(default_factory=list)
    active: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0
    stopped: bool = False

    async def start(self) -> None:
        await anyio.sleep(self.start_delay)
        if self.fail_start:
            raise RuntimeError("bundle is corrupt")

    def submit(self, request: GenerationRequest) -> FakeStream:
        last_text = " ".join(p.text for p in request.messages[-1].parts if isinstance(p, TextPart))
        if "reject me" in last_text:
            raise RequestRejected("prompt is longer than the context (4096 tokens)")
        if len(self.active) >= self.capacity:
            raise EngineOverloaded("queue full", retry_after=3)
        self.requests.append(request)
        self.active[request.request_id] = prompt_tokens(request)
        return FakeStream(self, request)

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self.active),
            num_waiting=0,
            kv_tokens_total=self.kv_total,
            kv_tokens_used=sum(self.active.values()),
            image_cache_hits=0,
            image_cache_misses=0,
            num_cancelled=self.cancelled,
        )

    async def stop(self, drain_timeout: float) -> None:
        self.stopped = True


class FakeStream:
    def __init__(self, engine: FakeEngine, request: GenerationRequest) -> None:
        self.engine, self.request = engine, request
        self._events = self._run()
        self._done = False

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events

    async def aclose(self) -> None:
        await self._events.aclose()
        if not self._done:
            self.engine.cancelled += 1
        self._release()

    def _release(self) -> None:
        self._done = True
        self.engine.active.pop(self.request.request_id, None)

    async def _run(self) -> AsyncIterator[StreamEvent]:
        sampling = self.request.sampling
        words = fake_answer(self.request)
        fail_after = 2 if "fail mid" in "".join(words) else None
        n_prompt = prompt_tokens(self.request)
        text = ""
        for i, word in enumerate(words[: sampling.max_tokens]):
            await anyio.sleep(self.engine.delay)
            if i == fail_after:
                self._release()
                yield StreamEvent("", finish_reason="error", error="device lost")
                return
            self.engine.active[self.request.request_id] += 1
            stop = next((s for s in sampling.stop if s in text + word), None)
            if stop is not None:
                self._release()
                yield StreamEvent((text + word).split(stop)[0][len(text) :], (), "stop", Usage(n_prompt, i + 1))
                return
            text += word
            logprobs = (TokenLogprob(word, -0.5, (("x", -1.0),) * sampling.top_logprobs),) if sampling.logprobs else ()
            if i + 1 == min(len(words), sampling.max_tokens):
                self._release()
                reason = "stop" if len(words) <= sampling.max_tokens else "length"
                yield StreamEvent(word, logprobs, reason, Usage(n_prompt, i + 1))
                return
            yield StreamEvent(word, logprobs)


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve app with uvicorn on a free loopback port in a thread; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def wait_ready(base_url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = httpx.get(f"{base_url}/ready", timeout=5)
        if ready.status_code == 200:
            return
        if ready.json()["status"] == "failed":
            raise RuntimeError(f"engine failed to load: {ready.json()['error']}")
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} not ready after {timeout}s")


@pytest.fixture
def fake_server() -> Callable[..., AbstractContextManager[tuple[str, FakeEngine]]]:
    """fake_server(engine={FakeEngine fields}, wait=True, **ServerConfig fields) -> (base_url, engine)."""

    @contextmanager
    def start(engine: dict | None = None, wait: bool = True, **config) -> Iterator[tuple[str, FakeEngine]]:
        fake = FakeEngine(**(engine or {}))
        app = create_app(ServerConfig(**{"model_name": "fake-vlm", **config}), lambda: fake)
        with running_server(app) as url:
            if wait:
                wait_ready(url)
            yield url, fake

    return start


# --- the real stack: demo bundle + `edgevlm serve` subprocess ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    log: Path
    api_key: str | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve_process(bundle: Path, *args: str, log_dir: Path, timeout: float = 300) -> Iterator[Served]:
    """`edgevlm serve --bundle B` on a free loopback port, until /ready answers 200."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    command = [sys.executable, "-m", "edgevlm.cli", "serve", "--bundle", str(bundle), "--port", str(port), *args]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    key = args[args.index("--api-key") + 1] if "--api-key" in args else None
    served = Served(f"http://127.0.0.1:{port}", process, log, key)
    try:
        deadline = time.monotonic() + timeout
        while not _is_ready(served.url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"edgevlm serve did not become ready:\n{served.output()[-4000:]}")
            time.sleep(0.2)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _is_ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def serve(demo_bundle: Path, tmp_path: Path) -> Callable[..., AbstractContextManager[Served]]:
    """serve(*cli_args) -> context manager yielding a ready `edgevlm serve` subprocess."""
    return lambda *args: serve_process(demo_bundle, *args, log_dir=tmp_path)


@pytest.fixture(scope="module")
def live_server(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `edgevlm serve` with an API key, shared by a test module."""
    with serve_process(demo_bundle, "--api-key", "test-key", log_dir=tmp_path_factory.mktemp("serve")) as served:
        yield served


@pytest.fixture
def trained_demo() -> None:
    """Answers are only right once the trained demo model (with its eval README) is in place."""
    from edgevlm.demo.checkpoint import DEMO_DIR

    if not (DEMO_DIR / "README.md").is_file():
        pytest.skip("the demo model is not trained yet (no demo/model/README.md)")
