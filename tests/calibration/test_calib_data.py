import json
from pathlib import Path

import pytest
from PIL import Image

from edgevlm.calibration.calib_data import CALIBRATION_OFFSET, calibration_set, read_prompts, user_set
from edgevlm.demo.questions import HELDOUT_OFFSET
from edgevlm.errors import UserError


def test_demo_set_is_disjoint_from_the_heldout_set() -> None:
    assert CALIBRATION_OFFSET > HELDOUT_OFFSET + 10_000_000
    calibration = calibration_set(None, None, 3)
    assert calibration.source == "demo"
    assert len(calibration.items) == 3
    assert all(item.image.mode == "RGB" and item.prompt for item in calibration.items)


def test_user_folder_pairs_images_with_cycling_prompts(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", "c.webp"):
        Image.new("RGB", (56, 56), "red").save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first\n\nsecond\n")
    calibration = user_set(tmp_path, prompts, 10)
    assert [item.prompt for item in calibration.items] == ["first", "second", "first"]
    assert len(user_set(tmp_path, None, 2).items) == 2


def test_prompts_may_be_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p}) for p in ("one", "two")) + "\n")
    assert read_prompts(path) == ["one", "two"]


@pytest.mark.parametrize(("content", "message"), [
    ("", "no prompts"),
    ('{"prompt": "ok"}\n{broken\n', "line 2 is not JSON"),
    ('{"text": "no prompt field"}\n', 'no "prompt"'),
])
def test_bad_prompt_files_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_prompts(path)


def test_a_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("nothing to see")
    with pytest.raises(UserError, match="no images in"):
        user_set(tmp_path, None, 4)
    with pytest.raises(UserError, match="not found"):
        user_set(tmp_path / "missing", None, 4)


def test_an_unreadable_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="cannot read calibration image .*broken.png"):
        user_set(tmp_path, None, 4)
