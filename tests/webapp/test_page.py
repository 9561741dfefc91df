"""The web page in Chromium against a real `edgevlm serve` with the demo bundle."""

import json
import re
import time

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from edgevlm.demo.questions import is_correct, make_sample
from edgevlm.demo.shapes import iou, render

pytestmark = pytest.mark.slow
ANSWER = ".msg.assistant .content"


def upload_scene(page: Page, sample, tmp_path) -> None:
    path = tmp_path / f"scene-{sample.seed}.png"
    render(sample.scene).save(path)
    page.set_input_files("#image-input", str(path))
    expect(page.locator("#preview")).to_be_visible()


def ask(page: Page, question: str) -> str:
    """Types the question, sends with Enter, waits for the streamed answer to finish."""
    count = page.locator(".msg.assistant").count()
    page.fill("#question", question)
    page.press("#question", "Enter")
    answer = page.locator(".msg.assistant").nth(count)
    expect(answer.locator(".meta")).not_to_be_empty(timeout=120_000)
    expect(page.locator("#send")).to_be_visible()
    return answer.locator(".content").get_attribute("data-text") or ""


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def sse(*texts: str) -> str:
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    chunks += [{"choices": [{"index": 0, "delta": {"content": t}}]} for t in texts]
    chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    return body + "data: [DONE]\n\n"


def test_colour_in_english_then_count_in_chinese(
    page: Page, web_server, tmp_path, artifacts, trained_demo, known_correct
):
    colour = known_correct("colour", "en")
    upload_scene(page, colour, tmp_path)
    page.screenshot(path=artifacts / "01-image-loaded.png")
    first = ask(page, colour.question)
    meta = page.locator(".msg.assistant .meta").first.inner_text()
    assert first and re.search(r"first token \d+ ms", meta) and "tokens/s" in meta
    page.click("#lang-toggle")
    expect(page.locator("#send")).to_have_text("发送")
    count = known_correct("count", "zh")
    upload_scene(page, count, tmp_path)
    expect(page.locator(".msg")).to_have_count(0)  # a new image starts a new conversation
    second = ask(page, count.question)
    assert "首个 token" in page.locator(".msg.assistant .meta").first.inner_text()
    page.screenshot(path=artifacts / "02-chinese-answer.png")
    if not trained_demo:
        pytest.skip("demo model not trained yet: streaming checked, answers not")
    assert is_correct(colour, first), (colour.question, colour.answer, first)
    assert is_correct(count, second), (count.question, count.answer, second)


def test_where_question_draws_box_over_the_shape(page: Page, tmp_path, artifacts, trained_demo, known_correct):
    sample = known_correct("box", "en")
    upload_scene(page, sample, tmp_path)
    answer = ask(page, sample.question)
    page.screenshot(path=artifacts / "03-box-answer.png")
    if not trained_demo:
        pytest.skip("demo model not trained yet: the answer may hold no box")
    box = page.locator("#boxes .box").first.bounding_box()
    img = page.locator("#preview-img").bounding_box()
    scale_x, scale_y = sample.scene.width / img["width"], sample.scene.height / img["height"]
    drawn = (
        (box["x"] - img["x"]) * scale_x,
        (box["y"] - img["y"]) * scale_y,
        (box["x"] + box["width"] - img["x"]) * scale_x,
        (box["y"] + box["height"] - img["y"]) * scale_y,
    )
    target = sample.target
    assert iou(drawn, (target.x1, target.y1, target.x2, target.y2)) >= 0.5, (answer, drawn, target)


@pytest.mark.parametrize("viewport", [(1200, 820), (390, 844)], ids=["desktop", "phone"])
def test_boxes_line_up_for_any_size(page: Page, tmp_path, artifacts, viewport):
    """A crafted answer with three boxes: each rectangle sits where its 0-1000 coordinates say."""
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    sample = make_sample(24, "box", "en")
    upload_scene(page, sample, tmp_path)
    boxes = [(0, 0, 500, 500), (250, 400, 750, 1000), (900, 100, 1000, 200)]
    marked = [f"<|begin_of_box|>[{a},{b},{c},{d}]<|end_of_box|>" for a, b, c, d in boxes]
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(
            status=200, content_type="text/event-stream", body=sse("Here: ", marked[0], " and ", *marked[1:])
        ),
    )
    ask(page, "where are they?")
    drawn = page.locator("#boxes .box")
    expect(drawn).to_have_count(3)
    img = page.locator("#preview-img").bounding_box()
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        rect = drawn.nth(i).bounding_box()
        expected = (img["x"] + x1 / 1000 * img["width"], img["y"] + y1 / 1000 * img["height"])
        assert abs(rect["x"] - expected[0]) < 2 and abs(rect["y"] - expected[1]) < 2
        assert abs(rect["width"] - (x2 - x1) / 1000 * img["width"]) < 2
        assert abs(rect["height"] - (y2 - y1) / 1000 * img["height"]) < 2
    expect(page.locator(".box-ref")).to_have_count(3)
    expect(page.locator(".box-ref").first).to_contain_text("box 1 [0, 0, 500, 500]")
    page.screenshot(path=artifacts / f"04-three-boxes-{viewport[0]}.png", full_page=True)


def test_stop_halts_stream_and_server_cancels(page: Page, web_server, tmp_path, artifacts):
    before = metric(web_server, "edgevlm:num_requests_cancelled_total")

    def make_long(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}") | {"max_tokens": 1500, "min_tokens": 1500}
        route.continue_(post_data=json.dumps(body))

    page.route("**/v1/chat/completions", make_long)
    upload_scene(page, make_sample(25, "describe", "en"), tmp_path)
    page.fill("#question", "Describe the image.")
    page.press("#question", "Enter")
    expect(page.locator(ANSWER)).not_to_be_empty(timeout=120_000)
    page.click("#stop")
    expect(page.locator(".msg.assistant .meta")).to_have_text("Stopped.")
    expect(page.locator("#send")).to_be_visible()
    text = page.locator(ANSWER).inner_text()
    page.wait_for_timeout(500)
    assert page.locator(ANSWER).inner_text() == text  # nothing more arrives
    page.screenshot(path=artifacts / "05-stopped.png")
    for _ in range(100):
        if metric(web_server, "edgevlm:num_requests_cancelled_total") > before:
            break
        page.wait_for_timeout(100)
    assert metric(web_server, "edgevlm:num_requests_cancelled_total") == before + 1
    assert metric(web_server, "edgevlm:num_requests_running") == 0


def test_model_output_is_text_never_html(page: Page, tmp_path, artifacts):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script><b id="bold">bold</b>'
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=sse(hostile[:20], hostile[20:])),
    )
    upload_scene(page, make_sample(26, "colour", "en"), tmp_path)
    ask(page, "What colour is the circle?")
    assert page.locator(ANSWER).inner_text() == hostile
    assert page.locator("#log img, #log script, #bold").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []
    page.screenshot(path=artifacts / "06-html-as-text.png")


def test_busy_and_auth_errors_are_explained(page: Page, tmp_path):
    upload_scene(page, make_sample(27, "colour", "en"), tmp_path)
    error = json.dumps({"error": {"message": "busy", "type": "rate_limit_error", "param": None, "code": "queue_full"}})
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(
            status=429, headers={"Retry-After": "7"}, content_type="application/json", body=error
        ),
    )
    page.fill("#question", "What colour is the circle?")
    page.press("#question", "Enter")
    expect(page.locator("#status")).to_have_text("The server is busy. Retry in 7 s.")
    page.unroute("**/v1/chat/completions")
    page.route(
        "**/v1/chat/completions", lambda route: route.fulfill(status=401, content_type="application/json", body=error)
    )
    page.fill("#question", "again?")
    page.press("#question", "Enter")
    expect(page.locator("#status")).to_contain_text("API key")
    page.unroute("**/v1/chat/completions")
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionrefused"))
    page.fill("#question", "and again?")
    page.press("#question", "Enter")
    expect(page.locator("#status")).to_contain_text("Cannot reach the server")


def test_non_image_and_too_big_uploads_are_refused(page: Page, tmp_path, artifacts):
    page.set_input_files("#image-input", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    expect(page.locator("#image-error")).to_contain_text("“notes.txt” is not an image")
    expect(page.locator("#preview")).to_be_hidden()
    page.screenshot(path=artifacts / "07-not-an-image.png")
    fake_png = {"name": "fake.png", "mimeType": "image/png", "buffer": b"definitely not a png"}
    page.set_input_files("#image-input", files=[fake_png])
    expect(page.locator("#image-error")).to_contain_text("could not be read")
    big = {"name": "huge.png", "mimeType": "image/png", "buffer": b"\0" * (21 * 1024 * 1024)}
    page.set_input_files("#image-input", files=[big])
    expect(page.locator("#image-error")).to_contain_text("the limit is 20 MB")


def wait_until(page: Page, expression: str, timeout_s: float = 10.0) -> None:
    """Poll `expression` from the test side until it is truthy. Not `page.wait_for_function`:
    once its first check fails it polls inside the page through eval, which the page's Content
    Security Policy (no 'unsafe-eval') refuses, so it failed whenever the save came late."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_s} s: {expression}")
        page.wait_for_timeout(20)


def test_settings_persist_and_page_is_labelled(page: Page, web_server, browser, artifacts):
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.click("#settings-button")
    page.get_by_label("Max tokens").fill("99")
    page.get_by_label("API key").fill("k-123")
    page.get_by_label("System prompt").fill("Answer briefly.")
    page.screenshot(path=artifacts / "08-settings.png")
    page.get_by_role("button", name="Save").click()
    # The dialog's "close" event (which saves) is dispatched as a later task than the click.
    wait_until(page, "localStorage.getItem('edgevlm.settings') !== null")
    stored = page.evaluate("[localStorage.getItem('edgevlm.apiKey'), localStorage.getItem('edgevlm.settings')]")
    assert stored[0] == "k-123" and json.loads(stored[1])["maxTokens"] == 99
    for name in ("New chat", "Settings", "Send"):
        expect(page.get_by_role("button", name=name)).to_be_visible()
    expect(page.get_by_label("Your question")).to_be_visible()
    zh = browser.new_context(locale="zh-CN").new_page()
    zh.goto(web_server)
    expect(zh.locator("#send")).to_have_text("发送")
    assert zh.evaluate("document.documentElement.lang") == "zh-CN"
    zh.context.close()


def test_box_parser(page: Page):
    parsed = page.evaluate(
        """async () => {
            const { parseAnswer } = await import('/static/boxes.js');
            const kinds = (t) => parseAnswer(t).map((s) => s.kind === 'box' ? Object.values(s.box).join(',') : s.text);
            return [
                kinds('a <|begin_of_box|>[1,2,30,40]<|end_of_box|> b [[5, 6, 70, 80]]'),
                kinds('bare [10,20,300,400] and not a box [3,2,1,0] or [1,2,3]'),
                kinds('half <|begin_of_box|>[12,3'),
                kinds('too big [0,0,2000,10]'),
            ];
        }"""
    )
    assert parsed[0] == ["a ", "1,2,30,40", " b ", "5,6,70,80"]
    assert parsed[1] == ["bare ", "10,20,300,400", " and not a box [3,2,1,0] or [1,2,3]"]
    assert parsed[2] == ["half …"]
    assert parsed[3] == ["too big [0,0,2000,10]"]
