"""Export options: invalid values raise ValueError naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevlm.export.options import ExportOptions


def test_defaults() -> None:
    options = ExportOptions(model_dir=Path("m"), out_dir=Path("o"))
    assert (options.dtype, options.max_batch, options.max_seq_len, options.opset) == ("fp32", 16, None, 18)
    assert options.validate and not options.force


@pytest.mark.parametrize(("changes", "field"), [
    ({"dtype": "fp8"}, "dtype"),
    ({"max_batch": 0}, "max_batch"),
    ({"max_seq_len": 1}, "max_seq_len"),
    ({"opset": 15}, "opset"),
    ({"dtype": "bf16"}, "bf16"),
])
def test_invalid_values_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ExportOptions(model_dir=Path("m"), out_dir=Path("o"), **changes)


def test_bf16_without_validation_is_allowed() -> None:
    assert ExportOptions(model_dir=Path("m"), out_dir=Path("o"), dtype="bf16", validate=False).dtype == "bf16"
