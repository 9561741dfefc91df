"""Engine limits: invalid values and unknown names raise ValueError naming the field."""

from __future__ import annotations

import pytest

from edgevlm.runtime.limits import EngineLimits


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_batch", 0), ("max_seq_len", 0), ("kv_cache_mb", 0), ("max_kv_tokens", -5), ("max_queue", -1),
     ("max_prefill_tokens", 0), ("max_vision_patches", 0), ("image_cache_mb", -1), ("threads", -1)],
)
def test_invalid_values_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        EngineLimits(**{field: value})


def test_unknown_limit_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_qeue"):
        EngineLimits.from_kwargs(max_qeue=3)
    assert EngineLimits.from_kwargs(max_queue=3).max_queue == 3
