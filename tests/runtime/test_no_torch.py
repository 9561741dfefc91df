"""The serving path never imports torch: the whole runtime imports (and builds a request) with torch
blocked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

MODULES = [
    "edgevlm.runtime.types", "edgevlm.runtime.bundle", "edgevlm.runtime.preprocess", "edgevlm.runtime.vision_inputs",
    "edgevlm.runtime.rope_index", "edgevlm.runtime.kv_cache", "edgevlm.runtime.sequence", "edgevlm.runtime.scheduler",
    "edgevlm.runtime.sampling", "edgevlm.runtime.detokenizer", "edgevlm.runtime.image_cache",
    "edgevlm.runtime.image_encoder", "edgevlm.runtime.step_inputs", "edgevlm.runtime.backends.base",
    "edgevlm.runtime.backends.onnxruntime", "edgevlm.runtime.engine", "edgevlm.runtime.async_engine",
    "edgevlm.runtime.demo_answers",
]


def run_blocked(code: str) -> subprocess.CompletedProcess:
    prelude = "import sys\nsys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_runtime_imports_without_torch() -> None:
    code = f"""
    import importlib
    for name in {MODULES!r}:
        importlib.import_module(name)
    import onnxruntime, transformers  # noqa: F401
    assert sys.modules['torch'] is None
    print("ok")
    """
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_preprocessing_runs_without_torch(checkpoint_dir) -> None:
    code = f"""
    from PIL import Image
    from edgevlm.runtime.preprocess import Preprocessor
    from edgevlm.runtime.types import ImagePart, Message, TextPart
    pre = Preprocessor.from_dir({str(checkpoint_dir)!r}, image_token_id=14)
    prompt = pre((Message("user", (ImagePart(Image.new("RGB", (300, 200))), TextPart("hi"))),))
    pixels = pre.pixels(list(prompt.images))
    assert pixels.shape[1] == 1176 and len(prompt) > 0
    print("ok")
    """
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr


def test_engine_serves_a_request_without_torch(bundle_dir) -> None:
    code = f"""
    from PIL import Image
    from edgevlm.runtime.engine import Engine
    from edgevlm.runtime.types import GenerationRequest, ImagePart, Message, SamplingParams, TextPart
    engine = Engine.from_bundle({str(bundle_dir)!r}, max_batch=2)
    message = Message("user", (ImagePart(Image.new("RGB", (224, 224), (200, 30, 30))), TextPart("describe the image.")))
    result = engine.generate(GenerationRequest("r", (message,), SamplingParams(max_tokens=4)))[0]
    assert result.finish_reason in ("stop", "length") and result.usage.completion_tokens >= 1
    assert sys.modules["torch"] is None
    print("ok")
    """
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr
