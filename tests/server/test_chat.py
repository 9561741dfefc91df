"""server/chat.py's stream writer: the per-token fast path writes exactly what the full one does."""

from __future__ import annotations

import json

import pytest

from edgevlm.server.chat import ChunkWriter
from edgevlm.server.schemas import Delta

TEXTS = ["red", " circle.", "红色的圆形", 'say "hi"\n\ttab \\ slash', "\u0000", "<|begin_of_box|>[1,2,3,4]"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_content_chunks_equal_the_full_serializer(include_usage: bool) -> None:
    writer = ChunkWriter("chatcmpl-1", "edgevlm-demo", 1_700_000_000, include_usage)
    for text in TEXTS:
        fast = writer.content(text)
        assert fast == writer.delta(Delta(content=text))
        data = json.loads(fast.removeprefix(b"data: ").removesuffix(b"\n\n"))
        assert data["choices"][0]["delta"] == {"content": text}
        assert ("usage" in data) == include_usage
