import pytest
from pydantic import ValidationError

from edgevlm.server.schemas import ChatCompletionRequest, ImageContent

OPTIONAL = [
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed", "stream",
    "stream_options", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "response_format", "user",
]  # fmt: skip


def test_null_for_every_optional_field_and_unknown_fields_ignored():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [], "weird": 1}
    body |= dict.fromkeys(OPTIONAL)
    request = ChatCompletionRequest.model_validate(body)
    assert request.max_tokens is None and request.stop is None


def test_content_parts_and_bare_image_url():
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": "data:image/png;base64,AAAA"},
                        {"type": "image_url", "image_url": {"url": "data:x", "detail": "low"}},
                        {"type": "text", "text": "what?"},
                    ],
                },
                {"role": "assistant", "content": None},
            ],
        }
    )
    parts = request.messages[1].content
    assert isinstance(parts[0], ImageContent) and parts[0].image_url.url.startswith("data:image/png")
    assert parts[1].image_url.detail == "low"


@pytest.mark.parametrize(
    "patch",
    [
        {"messages": []},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
        {"temperature": -1},
        {"top_p": 0},
        {"max_tokens": 0},
        {"stop": [""]},
        {"stop": ["x"] * 17},
        {"top_logprobs": 21},
    ],
)
def test_invalid_fields(patch):
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]} | patch)
