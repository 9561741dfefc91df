import json

import pytest

from edgevlm.bench.serve_workload import QUESTIONS_PER_IMAGE, Workload


def _images(bodies: list[bytes]) -> list[str]:
    return [json.loads(b)["messages"][0]["content"][0]["image_url"]["url"] for b in bodies]


def test_upload_sends_a_new_image_with_every_request_across_levels() -> None:
    workload = Workload("upload", "m", 16)
    first, second = workload.bodies(6), workload.bodies(5)
    images = _images(first + second)
    assert len(first) == 6 and len(second) == 5 and len(set(images)) == 11
    body = json.loads(first[0])
    assert body["model"] == "m" and body["max_tokens"] == 16 and body["stream"] is True


def test_upload_questions_rotate_through_types_and_languages() -> None:
    questions = [json.loads(b)["messages"][0]["content"][1]["text"] for b in Workload("upload", "m", 16).bodies(8)]
    assert len(set(questions)) == 8
    chinese = [q for q in questions if any("\u4e00" <= ch <= "\u9fff" for ch in q)]
    assert 2 <= len(chinese) <= 6
    assert any(q.startswith(("Describe", "What is in")) or "描述" in q or "有什么" in q for q in questions)


def test_chat_asks_several_different_questions_per_new_image() -> None:
    workload = Workload("chat", "m", 16)
    first, second = workload.bodies(10), workload.bodies(4)
    images = _images(first)
    assert len(first) == 10 and len(set(images)) == 3  # 4 + 4 + 2
    assert images[:QUESTIONS_PER_IMAGE] == [images[0]] * QUESTIONS_PER_IMAGE
    questions = [json.loads(b)["messages"][0]["content"][1]["text"] for b in first[:QUESTIONS_PER_IMAGE]]
    assert len(set(questions)) == QUESTIONS_PER_IMAGE
    assert not set(_images(second)) & set(images)  # the next level's images are new


def test_min_tokens_is_sent_only_when_asked() -> None:
    assert "min_tokens" not in json.loads(Workload("upload", "m", 16).bodies(1)[0])
    assert json.loads(Workload("upload", "m", 16, min_tokens=16).bodies(1)[0])["min_tokens"] == 16
    with pytest.raises(ValueError, match="min_tokens"):
        Workload("upload", "m", 16, min_tokens=17)


def test_the_same_workload_gives_the_same_bodies() -> None:
    assert Workload("chat", "m", 8).bodies(5) == Workload("chat", "m", 8).bodies(5)
    with pytest.raises(ValueError, match="workload"):
        Workload("replay", "m", 8)


def test_runs_that_start_at_other_scenes_share_no_image() -> None:
    one, other = Workload("chat", "m", 8, first_scene=0), Workload("chat", "m", 8, first_scene=1000)
    assert not set(_images(one.bodies(8))) & set(_images(other.bodies(8)))
    again = Workload("chat", "m", 8, first_scene=1000)
    assert _images(again.bodies(8)) == _images(Workload("chat", "m", 8, first_scene=1000).bodies(8))
    with pytest.raises(ValueError, match="first_scene"):
        Workload("chat", "m", 8, first_scene=-1)
