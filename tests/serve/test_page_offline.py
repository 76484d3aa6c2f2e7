"""The web page (serve/static/index.html) in headless Chromium against a stand-in API, without Ray.

The stand-in decodes uploads with the real ``serve.images`` and answers an edit with a flat colour whose red
channel encodes the Smiling strength, so the test can tell which answer the page shows. Skipped where
Chromium, chromedriver or selenium are missing.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.serve.stub_http import ScriptedHandler
import torch
from PIL import Image

from serve.images import BadImage, decode_base64_image, png_base64

PAGE = Path(__file__).resolve().parents[2] / "serve" / "static" / "index.html"
ATTRIBUTES = {"model": "stub-vae", "methods": ["mean_diff", "conditional"], "classifier_attributes": ["Smiling"],
              "attributes": [{"name": "Smiling", "kind": "direction", "min": -3, "max": 3, "step": 0.5, "default": 0},
                             {"name": "Eyeglasses", "kind": "direction", "min": -3, "max": 3, "step": 0.5, "default": 0,
                              "hint": "0 off, 1 on"}]}


def flat(red: int) -> str:
    return png_base64(torch.full((3, 8, 8), -1.0).index_fill_(0, torch.tensor([0]), red / 127.5 - 1))


class StubAPI(ScriptedHandler):
    def do_GET(self):
        if self.path == "/":
            return self.reply(200, PAGE.read_bytes(), "text/html; charset=utf-8")
        if self.path == "/v1/attributes":
            return self.reply(200, json.dumps(ATTRIBUTES).encode())
        self.reply(404, b'{"error": {"code": "not_found", "message": "no such page"}}')

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        try:
            face = decode_base64_image(body["image"], 8)
        except BadImage as exc:
            return self.reply(exc.status, json.dumps(exc.to_dict()).encode())
        if self.path == "/v1/reconstruct":
            return self.reply(200, json.dumps({"image": png_base64(face)}).encode())
        if not body.get("edits"):  # as the real Editor does
            return self.reply(400, b'{"error": {"code": "bad_field", "message": "\'edits\' is empty"}}')
        smiling = body["edits"].get("Smiling", 0.0)
        if smiling == 0.5:
            time.sleep(1.0)  # a slow answer that a later slider move must win over
        answer = {"image": flat(int(100 + 50 * smiling)), "reconstruction": png_base64(face), "model": "stub-vae",
                  "scores_before": {"Smiling": 0.25}, "scores_after": {"Smiling": min(1.0, 0.25 + smiling / 4)}}
        self.reply(200, json.dumps(answer).encode())


@pytest.fixture(scope="module")
def site():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StubAPI)
    httpd.requests = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def wait_ready(driver, timeout: float = 10.0) -> None:
    """Until #status reads "ready" twice 200 ms apart (a debounce timer may be about to fire)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.find_element("id", "status").text == "ready":
            time.sleep(0.2)
            if driver.find_element("id", "status").text == "ready":
                return
        time.sleep(0.05)
    raise AssertionError(f"page not ready: status {driver.find_element('id', 'status').text!r}")


def shown_red(driver, element_id: str) -> int:
    src = driver.find_element("id", element_id).get_attribute("src")
    assert src.startswith("data:image/png;base64,"), src[:40]
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), formats=["PNG"]).getpixel((0, 0))[0]


def set_slider(driver, name: str, value: float) -> None:
    driver.execute_script("const r = document.querySelector(`#sliders input[type=range][data-attribute='${arguments[0]}']`);"
                          "r.value = arguments[1]; r.dispatchEvent(new Event('input'));", name, value)


def test_page_uploads_edits_and_shows_errors(browser, site, tmp_path):
    browser.get(f"http://127.0.0.1:{site.server_address[1]}/")
    wait_ready(browser)
    sliders = browser.find_elements("css selector", "#sliders input[type=range]")
    assert [s.get_attribute("data-attribute") for s in sliders] == ["Smiling", "Eyeglasses"]
    assert sliders[0].get_attribute("min") == "-3" and sliders[0].get_attribute("step") == "0.5"
    assert [s.get_attribute("title") for s in sliders] == ["", "0 off, 1 on"]  # a slider's hint, where it has one
    assert [o.text for o in browser.find_elements("css selector", "#method option")] == ["mean_diff", "conditional"]
    assert browser.find_element("id", "model").text == "stub-vae"

    photo = tmp_path / "face.png"
    Image.new("RGB", (30, 20), (0, 0, 255)).save(photo)
    browser.find_element("id", "file").send_keys(str(photo))
    wait_ready(browser)
    # no edit yet: the edited face is the reconstruction, and no (empty, refused) edit request was sent
    assert shown_red(browser, "reconstruction") == 0 and shown_red(browser, "edited") == 0
    assert [p for p, _ in site.requests] == ["/v1/reconstruct"]

    site.requests.clear()
    set_slider(browser, "Smiling", 0.5)  # its answer is slow ...
    time.sleep(0.4)
    for value in (1, 1.5, 2):  # ... and these moves come within one debounce window
        set_slider(browser, "Smiling", value)
    wait_ready(browser)
    assert shown_red(browser, "edited") == 200  # Smiling=2 won over the slow 0.5
    assert [b["edits"] for _, b in site.requests] == [{"Smiling": 0.5}, {"Smiling": 2}]
    assert {b["method"] for _, b in site.requests} == {"mean_diff"}
    row = browser.find_element("css selector", "#scores tr[data-attribute='Smiling']")
    assert row.text.split()[:3] == ["Smiling", "0.25", "0.75"]
    assert browser.find_element("id", "error").text == ""

    browser.find_element("id", "reset").click()
    wait_ready(browser)
    assert shown_red(browser, "edited") == 0 and len(site.requests) == 2

    not_a_photo = tmp_path / "notes.png"
    not_a_photo.write_text("just text")
    browser.find_element("id", "file").send_keys(str(not_a_photo))
    wait_ready(browser)
    assert "not an image" in browser.find_element("id", "error").text
    assert browser.find_element("id", "edited").get_attribute("src") == ""
