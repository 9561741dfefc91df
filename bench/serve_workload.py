"""The load test's requests: which images and questions each concurrency level sends.

Rule: every level gets images the server has not seen, so no level is sped up by the image and
prompt caches an earlier level filled (a level that repeated earlier bodies would measure those
caches, not batching). Across runs against one server the same holds when each run starts at its
own scene (`first_scene`; `bench serve` draws one per run). Two kinds:

- `upload`: every request is a new image with one question (a user uploads a picture and asks);
  the questions rotate through colour, count, description, shape and box, English and Chinese,
  so answers run from one token to a sentence, as users' do (the reference article's own example
  asks for a description);
- `chat`: each new image is asked `QUESTIONS_PER_IMAGE` questions (follow-ups about the same
  picture, the web page's case); the image-embedding cache serves all but the first, and those
  that arrive together share one prefill of the template and image (prefix reuse from a running
  request).
"""

from __future__ import annotations

import base64
import json
import random
from io import BytesIO

WORKLOADS: tuple[str, ...] = ("upload", "chat")
QUESTIONS_PER_IMAGE = 4
SEED_OFFSET = 80_000_000  # scenes of their own: not the training seeds, not the held-out set's
MAX_FIRST_SCENE = 1_000_000_000  # SEED_OFFSET + this stays far below the held-out set's scene seeds
ORDER: tuple[tuple[str, str], ...] = (("colour", "en"), ("count", "zh"), ("describe", "en"), ("shape", "zh"),
                                      ("box", "en"), ("colour", "zh"), ("count", "en"), ("describe", "zh"))


class Workload:
    def __init__(self, kind: str, model: str, max_tokens: int, min_tokens: int = 0, first_scene: int = 0) -> None:
        if kind not in WORKLOADS:
            raise ValueError(f"workload must be one of {WORKLOADS}, got {kind!r}")
        if not 0 <= min_tokens <= max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens], got {min_tokens}")
        if not 0 <= first_scene < MAX_FIRST_SCENE:
            raise ValueError(f"first_scene must be in [0, {MAX_FIRST_SCENE}), got {first_scene}")
        self.kind = kind
        self.model = model
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self._next_scene = first_scene

    def bodies(self, count: int) -> list[bytes]:
        """`count` request bodies about images no earlier call used."""
        per_image = 1 if self.kind == "upload" else QUESTIONS_PER_IMAGE
        bodies: list[bytes] = []
        while len(bodies) < count:
            bodies += self._about_one_image(min(per_image, count - len(bodies)))
        return bodies

    def _about_one_image(self, questions: int) -> list[bytes]:
        from edgevlm.demo.questions import ask
        from edgevlm.demo.shapes import random_scene, render

        seed = SEED_OFFSET + self._next_scene
        turn = self._next_scene % len(ORDER)  # each image starts at the next question type
        self._next_scene += 1
        scene = random_scene(seed)
        buffer = BytesIO()
        render(scene).save(buffer, "PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        rng = random.Random(seed)
        asked = [ask(rng, scene, qtype, lang) for qtype, lang in ORDER[turn:] + ORDER[:turn]]
        texts = [a[0] for a in asked if a is not None][:questions]  # describe always fits: never empty
        return [self._body(url, text) for text in texts]

    def _body(self, url: str, question: str) -> bytes:
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.min_tokens:
            body["min_tokens"] = self.min_tokens  # vLLM's extension; edgevlm honours it
        return json.dumps(body).encode()
