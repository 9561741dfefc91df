"""A naive baseline server: transformers on the CPU, one request at a time, streaming over the same
OpenAI chat-completions shape. Only for `edgevlm bench serve --baseline hf`.

    python -m edgevlm.bench.serve_hf_baseline --model DIR --port 8081
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Generator:
    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForImageTextToText

        from edgevlm.demo.hf_compat import load_processor

        self.torch = torch
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
        self.processor = load_processor(model_dir)
        self.lock = threading.Lock()  # the whole point of the baseline: one request at a time

    def stream(self, messages: list[dict], max_tokens: int):
        from transformers import TextIteratorStreamer

        from edgevlm.server.images import ImageLimits, load_image

        images, chat = [], []
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                chat.append({"role": message["role"], "content": content})
                continue
            parts = []
            for part in content:
                if part["type"] == "image_url":
                    url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
                    images.append(load_image(url, ImageLimits()))
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": part["text"]})
            chat.append({"role": message["role"], "content": parts})
        prompt = self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[prompt], images=images or None, return_tensors="pt")
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True)
        kwargs = dict(**inputs, max_new_tokens=max_tokens, do_sample=False, streamer=streamer)
        counted: list[int] = []
        with self.lock:
            worker = threading.Thread(target=self._generate, args=(kwargs, counted))
            worker.start()
            yield from streamer
            worker.join()
        return counted[0] if counted else 0

    def _generate(self, kwargs: dict, counted: list[int]) -> None:
        """Generates, and records how many tokens were generated (the streamer yields text pieces)."""
        with self.torch.inference_mode():
            output = self.model.generate(**kwargs)
        counted.append(output.shape[1] - kwargs["input_ids"].shape[1])


def handler_for(generator: Generator, model_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path in ("/health", "/ready"):
                self._json(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            request_id = f"chatcmpl-{uuid.uuid4().hex}"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            pieces = generator.stream(body["messages"], int(body.get("max_tokens") or 64))
            while True:
                try:
                    text = next(pieces)
                except StopIteration as done:
                    tokens = done.value
                    break
                if text:
                    self._event({"id": request_id, "choices": [{"index": 0, "delta": {"content": text}}]})
            usage = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
            self._event({"id": request_id, "choices": [], "usage": usage, "created": int(time.time())})
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

        def _event(self, data: dict) -> None:
            self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    generator = Generator(args.model)
    server = ThreadingHTTPServer((args.host, args.port), handler_for(generator, args.model.name))
    server.serve_forever()


if __name__ == "__main__":
    main()
