"""Fixtures shared by every test folder."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from edgevlm.demo.checkpoint import DEMO_DIR
from edgevlm.demo.questions import Sample, heldout_set


@pytest.fixture(scope="session")
def known_correct() -> Callable[[str, str, int], Sample]:
    """Held-out questions the committed demo model answers correctly with the PyTorch reference,
    read from its committed eval report (demo/model/eval.json). Serving tests ask these, so a
    wrong answer means the serving path changed the model's answer, not that the model is weak."""
    report = json.loads((DEMO_DIR / "eval.json").read_text())
    samples = heldout_set(report["num_questions"])
    right = [q["index"] for q in report["questions"] if q["correct"]["model"]]

    def pick(qtype: str, lang: str, nth: int = 0) -> Sample:
        matches = [samples[i] for i in right if (samples[i].qtype, samples[i].lang) == (qtype, lang)]
        if len(matches) <= nth:
            pytest.fail(f"the demo model's eval report has fewer than {nth + 1} right {qtype}/{lang} answers")
        return matches[nth]

    return pick


# Serving tests share one export of the demo model, cached until its weights or the exporter change.
BUNDLE_CACHE = Path(tempfile.gettempdir()) / "edgevlm-test" / "demo-bundle"


@pytest.fixture(scope="session")
def demo_bundle() -> Path:
    """The demo model exported once ($EDGEVLM_TEST_BUNDLE overrides)."""
    from edgevlm.server.demo_bundle import ensure_demo_bundle

    if os.environ.get("EDGEVLM_TEST_BUNDLE"):
        return Path(os.environ["EDGEVLM_TEST_BUNDLE"])
    return ensure_demo_bundle(BUNDLE_CACHE)
