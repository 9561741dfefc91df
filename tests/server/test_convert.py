import anyio
import pytest

from edgevlm.runtime.types import ImagePart, TextPart
from edgevlm.server.config import ServerConfig
from edgevlm.server.convert import generation_request, sampling_params
from edgevlm.server.errors import BadRequest
from edgevlm.server.schemas import ChatCompletionRequest

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
CONFIG = ServerConfig(max_images=2)
TEXT = {"type": "text", "text": "x"}
IMAGE_PARAM = "messages[0].content[1].image_url"


def body(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]} | fields
    )


def convert(request: ChatCompletionRequest):
    return anyio.run(generation_request, request, "id-1", CONFIG)


def test_sampling_defaults_and_mapping():
    default = sampling_params(body(), CONFIG)
    assert (default.max_tokens, default.temperature, default.top_k) == (CONFIG.default_max_tokens, 0.0, 0)
    s = sampling_params(
        body(max_tokens=5, max_completion_tokens=7, temperature=0.7, top_k=-1, stop="END", seed=3, logprobs=True),
        CONFIG,
    )
    assert (s.max_tokens, s.temperature, s.top_k, s.stop, s.seed, s.logprobs) == (7, 0.7, 0, ("END",), 3, True)


def test_roles_and_parts():
    request = body(
        messages=[
            {"role": "developer", "content": "short answers"},
            {"role": "user", "content": [{"type": "image_url", "image_url": PIXEL}, {"type": "text", "text": "q"}]},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "q2"},
        ]
    )
    generation = convert(request)
    roles = [m.role for m in generation.messages]
    assert roles == ["system", "user", "assistant", "user"]
    image, text = generation.messages[1].parts
    assert isinstance(image, ImagePart) and image.image.size == (1, 1)
    assert text == TextPart("q")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": PIXEL}] * 3}]}, "messages"),
        ({"messages": [{"role": "user", "content": [TEXT, {"type": "image_url", "image_url": "Zm9v"}]}]}, IMAGE_PARAM),
    ],
)  # fmt: skip
def test_unsupported_requests_are_clear_400s(fields, param):
    with pytest.raises(BadRequest) as info:
        convert(body(**fields))
    assert info.value.param == param
