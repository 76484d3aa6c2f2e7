"""``facegen edit`` against a real HTTP server on 127.0.0.1 that speaks the /v1/edit protocol.

The stand-in server answers with a known PNG and known scores, so these tests pin the client's side of the
contract (request body, written file, summary line, one-line errors, exit status 2) without Ray.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer

import pytest
from PIL import Image

from facegen.cli import main
from tests.serve.stub_http import ScriptedHandler

SCORES_BEFORE = {"Smiling": 0.12, "Eyeglasses": 0.8, "Male": 0.9}
SCORES_AFTER = {"Smiling": 0.93, "Eyeglasses": 0.1, "Male": 0.88}


def png_bytes(size=(8, 6), colour=(10, 200, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


EDITED = png_bytes()


class EditHandler(ScriptedHandler):
    """POST /v1/edit: the edit names steer the answer (``Unknown`` -> 400 JSON error, ``Crash`` -> 500
    text, ``Garbage`` -> 200 non-JSON, ``NotPng`` -> 200 with a non-PNG image, ``Blond`` -> no scores,
    ``Busy=S`` -> 503 with ``Retry-After: S``, ``Flaky`` -> 503 while ``server.flaky`` > 0, then 200)."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, self.headers.get("Content-Type"), body))
        edits = body.get("edits", {})
        if self.path != "/v1/edit":
            return self.reply(404, b'{"detail": "Not Found"}')
        if not base64.b64decode(body["image"]).startswith((b"\x89PNG", b"\xff\xd8")):
            error = {"code": "not_an_image", "message": "the upload is not an image; send JPEG, PNG, ..."}
            return self.reply(400, json.dumps({"error": error}).encode())
        if "Unknown" in edits:
            error = {"code": "unknown_attribute", "message": "unknown attribute 'Unknown' (known: Smiling, ...)"}
            return self.reply(400, json.dumps({"error": error}).encode())
        if "Busy" in edits or ("Flaky" in edits and self.server.flaky > 0):
            self.server.flaky -= 1
            error = {"code": "unavailable", "message": "a model replica was lost; retry the request"}
            return self.reply(503, json.dumps({"error": error}).encode(), retry_after=edits.get("Busy"))
        if "Crash" in edits:
            return self.reply(500, b"Internal Server Error\nTraceback ...", "text/plain")
        if "Garbage" in edits:
            return self.reply(200, b"<html>surprise</html>", "text/html")
        image = b"GIF89a..." if "NotPng" in edits else EDITED
        no_classifier = "Blond" in edits  # the real Editor's scores are null without a classifier bundle
        answer = {"image": base64.b64encode(image).decode(), "reconstruction": base64.b64encode(EDITED).decode(),
                  "scores_before": None if no_classifier else SCORES_BEFORE,
                  "scores_after": None if no_classifier else SCORES_AFTER,
                  "model": "tiny-vae", "method": body.get("method", "mean_diff"), "edits": edits}
        self.reply(200, json.dumps(answer).encode())


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EditHandler)
    httpd.requests, httpd.flaky = [], 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def url(server) -> str:
    server.requests.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes((20, 30), (200, 100, 50)))
    return path


def edit(*args: str) -> int:
    return main(["edit", *args])


def test_edit_writes_the_png_and_prints_one_line(url, server, photo, tmp_path, capsys):
    out = tmp_path / "out.png"
    code = edit(str(photo), "--set", "Smiling=1.5", "--set", "Eyeglasses=-1", "--keep", "Male",
                "--method", "conditional", "--url", url + "/", "-o", str(out))
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert out.read_bytes() == EDITED
    assert printed.out == (f"wrote {out} (8x6, model tiny-vae, conditional): "
                           "Smiling 0.12 -> 0.93, Eyeglasses 0.80 -> 0.10\n")
    [(path, content_type, body)] = server.requests
    assert (path, content_type) == ("/v1/edit", "application/json")
    assert body == {"image": base64.b64encode(photo.read_bytes()).decode(), "edits": {"Smiling": 1.5, "Eyeglasses": -1.0},
                    "keep": ["Male"], "method": "conditional"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "photo.png"]  # no temp file left


def test_scores_table_and_default_output_name(url, server, photo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert edit(str(photo), "--set", "Smiling=1", "--scores", "--url", url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (tmp_path / "photo-edited.png").read_bytes() == EDITED
    assert lines[0].startswith("wrote photo-edited.png") and lines[1].split() == ["attribute", "before", "after"]
    assert [line.split() for line in lines[2:]] == [["Eyeglasses", "0.80", "0.10"], ["Male", "0.90", "0.88"],
                                                   ["Smiling", "0.12", "0.93"]]
    assert "method" not in server.requests[0][2]  # the server's default method when --method is not given


def test_without_a_classifier_scores_are_na(url, photo, tmp_path, capsys):
    assert edit(str(photo), "--set", "Blond=1", "--scores", "--url", url, "-o", str(tmp_path / "o.png")) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {tmp_path / 'o.png'} (8x6, model tiny-vae, mean_diff): Blond n/a -> n/a", "attribute  before  after"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--set", "Unknown=1"], "unknown attribute 'Unknown' (known: Smiling, ...) (unknown_attribute, HTTP 400)"),
    (["--set", "Crash=1"], "HTTP 500: Internal Server Error"),
    (["--set", "Garbage=1"], "the answer is not JSON"),
    (["--set", "NotPng=1"], "'image' is not a PNG image"),
    (["--set", "Smiling"], "--set 'Smiling': expected NAME=NUMBER"),
    (["--set", "Smiling=abc"], "--set 'Smiling=abc': expected NAME=NUMBER"),
    (["--set", "=1"], "--set '=1': expected NAME=NUMBER"),
    (["--set", "Smiling=nan"], "expected NAME=NUMBER"),
    (["--set", "Smiling=1", "--set", "Smiling=2"], "--set Smiling: given twice"),
    ([], "nothing to edit: give at least one --set NAME=STRENGTH"),
    (["--set", "Smiling=1", "--timeout", "0"], "--timeout 0: must be a positive number of seconds"),
    (["--set", "Smiling=1", "--url", "127.0.0.1:8000"], "--url '127.0.0.1:8000': expected http://HOST:PORT"),
    (["--set", "Smiling=1", "--url", "http://127.0.0.1:{closed}"], "cannot reach http://127.0.0.1:{closed}/v1/edit"),
])
def test_mistakes_are_one_line_and_exit_2(args, message, url, photo, tmp_path, capsys):
    closed = closed_port()
    out = tmp_path / "out.png"
    out.write_bytes(b"previous result")
    args = [a.format(closed=closed) for a in args]
    code = edit(str(photo), "--url", url, "-o", str(out), *args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message.format(closed=closed) in err, err
    assert out.read_bytes() == b"previous result"  # nothing half-written over the old file


def test_a_503_is_retried_until_answered(url, server, photo, tmp_path, capsys):
    server.flaky = 2  # a replica lost: the service answers 503 twice, then Serve has replaced it
    out = tmp_path / "out.png"
    assert edit(str(photo), "--set", "Flaky=1", "--url", url, "-o", str(out)) == 0, capsys.readouterr().err
    assert out.read_bytes() == EDITED and len(server.requests) == 3


def test_retries_are_bounded_by_count_and_timeout(url, server, photo, tmp_path, capsys):
    assert edit(str(photo), "--set", "Busy=0", "--url", url, "-o", str(tmp_path / "o.png")) == 2
    err = capsys.readouterr().err
    assert "(unavailable, HTTP 503) (after 4 attempts)" in err and len(server.requests) == 4, err
    server.requests.clear()  # a Retry-After beyond the timeout: no second attempt, no wait past --timeout
    assert edit(str(photo), "--set", "Busy=3", "--url", url, "--timeout", "1", "-o", str(tmp_path / "o.png")) == 2
    err = capsys.readouterr().err
    assert err.endswith("(unavailable, HTTP 503)\n") and len(server.requests) == 1, err


def test_unreadable_inputs_and_outputs(url, photo, tmp_path, capsys):
    assert edit(str(tmp_path / "absent.jpg"), "--set", "Smiling=1", "--url", url) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'absent.jpg'}: cannot read (No such file or directory)\n"
    assert edit(str(tmp_path), "--set", "Smiling=1", "--url", url) == 2  # a folder
    assert "cannot read" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    assert edit(str(text), "--set", "Smiling=1", "--url", url) == 2
    assert "the upload is not an image" in capsys.readouterr().err
    assert edit(str(photo), "--set", "Smiling=1", "--url", url, "-o", str(tmp_path / "missing" / "out.png")) == 2
    assert "cannot write (No such file or directory)" in capsys.readouterr().err


def test_console_entry_point(url, photo, tmp_path):
    out = tmp_path / "cli.png"
    done = subprocess.run([sys.executable, "-m", "facegen.cli", "edit", str(photo), "--set", "Smiling=0.5",
                           "--url", url, "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == EDITED and "Smiling 0.12 -> 0.93" in done.stdout
    failed = subprocess.run([sys.executable, "-m", "facegen.cli", "edit", str(photo), "--set", "Smiling",
                             "--url", url], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2 and failed.stderr.startswith("error: --set") and "Traceback" not in failed.stderr
