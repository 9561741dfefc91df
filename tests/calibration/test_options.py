from pathlib import Path

import pytest

from edgevlm.calibration.options import QuantizeOptions


def options(**changes) -> QuantizeOptions:
    fields = {"bundle_dir": Path("in"), "out_dir": Path("out"), "mode": "int8"} | changes
    return QuantizeOptions(**fields)


def test_defaults_follow_the_mode() -> None:
    assert options().resolved_method == "percentile"
    assert options().resolved_max_drop == 1.0
    assert options(mode="int4").resolved_method == "rtn"
    assert options(mode="int4").resolved_max_drop == 2.0
    assert options(max_accuracy_drop=0.0).resolved_max_drop == 0.0


@pytest.mark.parametrize(("changes", "field"), [
    ({"mode": "int2"}, "mode"),
    ({"method": "awq"}, "method"),
    ({"mode": "int4", "method": "entropy"}, "method"),
    ({"samples": 0}, "samples"),
    ({"block_size": 48}, "block_size"),
    ({"max_accuracy_drop": -1.0}, "max_accuracy_drop"),
    ({"eval_limit": 0}, "eval_limit"),
    ({"calib_prompts": Path("p.txt")}, "calib_prompts"),
    ({"mode": "int4", "calib_cache": Path("c.json")}, "calib_cache"),
    ({"out_dir": Path("in")}, "out_dir"),
])
def test_bad_options_name_their_field(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        options(**changes)
