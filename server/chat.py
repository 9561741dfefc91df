"""POST /v1/chat/completions (stream and not) and POST /vqa."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from edgevlm.server.convert import generation_request
from edgevlm.server.errors import APIError, BadRequest, GenerationFailed, PayloadTooLarge, Unavailable
from edgevlm.server.generation import Generation, choice_logprobs, logprobs_out
from edgevlm.server.images import describe_bytes
from edgevlm.server.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    ImageContent,
    ImageURL,
    TextContent,
    TokenLogprobOut,
    UsageOut,
    VQARequest,
    VQAResponse,
)
from edgevlm.server.service import Service

log = logging.getLogger("edgevlm.server")
Body = TypeVar("Body", bound=BaseModel)
T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's status for "client closed the request"


# --- request bodies ---------------------------------------------------------------------------
async def read_body(request: Request, schema: type[Body], max_bytes: int) -> Body:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"Request body is over the {describe_bytes(max_bytes)} limit")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"Request body is over the {describe_bytes(max_bytes)} limit")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def validation_error(exc: ValidationError) -> BadRequest:
    """The most specific error, located by a readable path (union-member labels dropped)."""
    first = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
    where: list[str] = []
    for part in first["loc"]:
        label = str(part)
        if "[" in label or label == "str" or (where and where[-1] == label):
            continue
        where.append(label)
    param = ".".join(where) or None
    message = first["msg"].removeprefix("Value error, ")
    return BadRequest(f"{param}: {message}" if param else message, param=param, code="invalid_value")


# --- chat completions ---------------------------------------------------------------------------
async def chat_completions(request: Request) -> Response:
    service: Service = request.state.service
    body = await read_body(request, ChatCompletionRequest, service.config.max_body_bytes)
    service.check_model(body.model)
    gen = await start_generation(request, service, body)
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = ChunkWriter(gen.request_id, body.model, created, include_usage)
        return EventStreamResponse(sse_events(gen, chunks), on_close=gen.close)
    try:
        result = await until_disconnect(request, lambda: collect(gen))
    finally:
        await gen.close()
    if result is None:
        return Response(status_code=CLIENT_CLOSED)
    text, logprobs = result
    completion = ChatCompletion(
        id=gen.request_id,
        created=created,
        model=body.model,
        choices=[
            Choice(
                index=0,
                message=AssistantMessage(content=text),
                finish_reason=gen.finish_reason,  # type: ignore[arg-type]
                logprobs=choice_logprobs(logprobs if body.logprobs else None),
            )
        ],
        usage=usage(gen),
    )
    return JSONResponse(completion.model_dump(mode="json"), headers={"X-Request-ID": gen.request_id})


async def start_generation(request: Request, service: Service, body: ChatCompletionRequest) -> Generation:
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    generation = await generation_request(body, request_id, service.config)
    # Tokenising and image preprocessing happen in submit: off the event loop, and shielded so a
    # stream the engine accepted is never dropped unclosed.
    with anyio.CancelScope(shield=True):
        stream = await anyio.to_thread.run_sync(service.submit, generation)
    gen = Generation(request_id, stream, service.metrics)
    request.state.generation = gen
    return gen


def usage(gen: Generation) -> UsageOut:
    return UsageOut(
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        total_tokens=gen.prompt_tokens + gen.completion_tokens,
    )


async def collect(gen: Generation) -> tuple[str, list[TokenLogprobOut]]:
    texts: list[str] = []
    logprobs: list[TokenLogprobOut] = []
    async with aclosing(gen.events()) as events:
        async for event in events:
            texts.append(event.text)
            logprobs.extend(logprobs_out(event.logprobs))
    if gen.finish_reason == "error":
        raise GenerationFailed(f"Generation failed: {gen.error or 'engine error'}")
    if gen.finish_reason in (None, "cancelled"):
        raise Unavailable("Generation was cancelled: the server is shutting down", code="cancelled", retry_after=1)
    return "".join(texts), logprobs


async def until_disconnect(request: Request, work: Callable[[], Awaitable[T]]) -> T | None:
    """Runs work; if the client disconnects first, cancels it and returns None."""
    result: list[T] = []

    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        async def run() -> None:
            result.append(await work())
            group.cancel_scope.cancel()

        group.start_soon(watch)
        group.start_soon(run)
    return result[0] if result else None


# --- streaming ----------------------------------------------------------------------------------
class ChunkWriter:
    def __init__(self, request_id: str, model: str, created: int, include_usage: bool) -> None:
        self.request_id, self.model, self.created, self.include_usage = (
            request_id,
            model,
            created,
            include_usage,
        )
        self._content_template: tuple[bytes, bytes] | None = None

    def chunk(self, choices: list[ChunkChoice], usage_out: UsageOut | None = None) -> bytes:
        chunk = ChatCompletionChunk(
            id=self.request_id, created=self.created, model=self.model, choices=choices, usage=usage_out
        )
        data = chunk.model_dump(mode="json")
        for choice, out in zip(choices, data["choices"], strict=True):
            out["delta"] = choice.delta.model_dump(exclude_none=True)
        if not self.include_usage:
            data.pop("usage")
        return sse(data)

    def delta(self, delta: Delta, finish: Any = None, logprobs: list[TokenLogprobOut] | None = None) -> bytes:
        return self.chunk([ChunkChoice(index=0, delta=delta, finish_reason=finish, logprobs=choice_logprobs(logprobs))])

    def content(self, text: str) -> bytes:
        """The chunk of a text delta (no logprobs): `delta(Delta(content=text))`, byte for byte,
        without building and dumping the models for every token. Rule: the template is cut from
        what `delta` writes for a marker text, so the two cannot drift apart."""
        if self._content_template is None:
            marker = "\u0000edgevlm-content\u0000"
            whole = self.delta(Delta(content=marker))
            quoted = json.dumps(marker, ensure_ascii=False).encode()
            head, _, tail = whole.partition(quoted)
            self._content_template = (head, tail)
        head, tail = self._content_template
        return head + json.dumps(text, ensure_ascii=False).encode() + tail


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def sse_events(gen: Generation, chunks: ChunkWriter) -> AsyncGenerator[bytes, None]:
    yield chunks.delta(Delta(role="assistant", content=""))
    try:
        async with aclosing(gen.events()) as events:
            async for event in events:
                if event.finish_reason in ("error", "cancelled"):
                    yield sse(stream_error(gen).payload())
                    break
                if event.logprobs:
                    yield chunks.delta(Delta(content=event.text), logprobs=logprobs_out(event.logprobs))
                elif event.text:
                    yield chunks.content(event.text)
                if event.finish_reason is not None:
                    yield chunks.delta(Delta(), finish=event.finish_reason)
                    if chunks.include_usage:
                        yield chunks.chunk([], usage(gen))
    except Exception:
        log.exception("stream %s failed", gen.request_id)
        yield sse(GenerationFailed("Generation failed: internal error").payload())
    yield DONE


def stream_error(gen: Generation) -> APIError:
    if gen.finish_reason == "cancelled":
        return Unavailable("Generation was cancelled: the server is shutting down", code="cancelled")
    return GenerationFailed(f"Generation failed: {gen.error or 'engine error'}")


class EventStreamResponse(StreamingResponse):
    """SSE; a client disconnect cancels the body and closing the body closes the engine stream."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()
                await self._on_close()


# --- /vqa ---------------------------------------------------------------------------------------
async def vqa(request: Request) -> Response:
    service: Service = request.state.service
    body = await read_body(request, VQARequest, service.config.max_body_bytes)
    chat = ChatCompletionRequest(
        model=service.config.model_name,
        messages=[
            ChatMessage(
                role="user",
                content=[
                    ImageContent(type="image_url", image_url=ImageURL(url=body.image)),
                    TextContent(type="text", text=body.question),
                ],
            )
        ],
        max_tokens=body.max_tokens,
    )
    try:
        gen = await start_generation(request, service, chat)
    except BadRequest as exc:
        exc.param = "image" if exc.param and "image_url" in exc.param else exc.param
        raise
    try:
        result = await until_disconnect(request, lambda: collect(gen))
    finally:
        await gen.close()
    if result is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(VQAResponse(answer=result[0]).model_dump())
