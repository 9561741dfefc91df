"""Validated OpenAI request -> the runtime's GenerationRequest (images decoded in a worker thread)."""

from __future__ import annotations

import anyio
from PIL import Image

from edgevlm.runtime.types import GenerationRequest, ImagePart, Message, Role, SamplingParams, TextPart
from edgevlm.server.config import ServerConfig
from edgevlm.server.errors import BadRequest
from edgevlm.server.images import ImageError, ImageLimits, load_image
from edgevlm.server.schemas import ChatCompletionRequest, ChatMessage, ImageContent

ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def image_limits(config: ServerConfig) -> ImageLimits:
    return ImageLimits(
        max_bytes=config.max_image_bytes,
        max_pixels=config.max_image_pixels,
        allowed_hosts=config.image_hosts,
        fetch_timeout_s=config.image_fetch_timeout_s,
    )


def check_supported(body: ChatCompletionRequest) -> None:
    if body.n not in (None, 1):
        raise BadRequest("Only n=1 is supported", param="n", code="unsupported_parameter")
    if body.response_format is not None and body.response_format.type != "text":
        raise BadRequest(
            f"response_format type {body.response_format.type!r} is not supported; only 'text'",
            param="response_format",
            code="unsupported_parameter",
        )
    if body.top_logprobs and not body.logprobs:
        raise BadRequest("top_logprobs requires logprobs=true", param="top_logprobs")


def sampling_params(body: ChatCompletionRequest, config: ServerConfig) -> SamplingParams:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return SamplingParams(
        max_tokens=body.max_completion_tokens or body.max_tokens or config.default_max_tokens,
        temperature=config.default_temperature if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=max(0, body.top_k or 0),
        seed=body.seed,
        stop=stop,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
        min_tokens=body.min_tokens or 0,
    )


def count_images(messages: list[ChatMessage]) -> int:
    return sum(isinstance(part, ImageContent) for m in messages if isinstance(m.content, list) for part in m.content)


def convert_messages(messages: list[ChatMessage], limits: ImageLimits) -> tuple[Message, ...]:
    return tuple(_convert_message(i, m, limits) for i, m in enumerate(messages))


def _convert_message(index: int, message: ChatMessage, limits: ImageLimits) -> Message:
    role = ROLES[message.role]
    if message.content is None:
        return Message(role, ())
    if isinstance(message.content, str):
        return Message(role, (TextPart(message.content),))
    parts: list[TextPart | ImagePart] = []
    for j, part in enumerate(message.content):
        if isinstance(part, ImageContent):
            parts.append(ImagePart(_load(part.image_url.url, limits, f"messages[{index}].content[{j}].image_url")))
        else:
            parts.append(TextPart(part.text))
    return Message(role, tuple(parts))


def _load(url: str, limits: ImageLimits, param: str) -> Image.Image:
    try:
        return load_image(url, limits)
    except ImageError as exc:
        exc.param = param
        raise


async def generation_request(body: ChatCompletionRequest, request_id: str, config: ServerConfig) -> GenerationRequest:
    check_supported(body)
    if count_images(body.messages) > config.max_images:
        raise BadRequest(f"At most {config.max_images} images per request", param="messages", code="too_many_images")
    try:
        sampling = sampling_params(body, config)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    messages = await anyio.to_thread.run_sync(convert_messages, body.messages, image_limits(config))
    return GenerationRequest(request_id=request_id, messages=messages, sampling=sampling)
