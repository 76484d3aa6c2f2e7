"""``facegen serve --haproxy`` and ``--direct-ingress`` for real: the command starts its own local Ray with Ray
Serve's switches set (they are read when Serve is imported, so not on the session's Ray), an edit goes through
HAProxy or straight to the ingress replica, a bad upload is a 400 JSON there too, and SIGTERM stops it all,
HAProxy included.

One Ray per box: each command brings its own, so ``conftest.py`` runs these before the session's Ray starts.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.own_cluster


def _photo() -> str:
    out = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 120, 90)).save(out, format="JPEG")
    return base64.b64encode(out.getvalue()).decode()


def _post(url: str, body: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.load(error)


def _haproxy_processes(config_port: int) -> list[int]:
    """PIDs of HAProxy processes whose config serves ``config_port`` (ours; another run's would not)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if entry.isdigit() and cmdline[0].endswith(b"haproxy") and b"-f" in cmdline:
            config = Path(cmdline[cmdline.index(b"-f") + 1].decode())
            if config.is_file() and f":{config_port}\n" in config.read_text():
                pids.append(int(entry))
    return pids


@pytest.mark.parametrize("flag", ["--haproxy", "--direct-ingress"])
def test_serve_through_haproxy_or_straight_from_the_replica(flag, tiny_bundles, tmp_path):
    port, first_replica_port = free_port(), free_port()
    while first_replica_port <= port < first_replica_port + 100 or first_replica_port > 65000:  # the probed range
        first_replica_port = free_port()
    env = {**os.environ, "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
           "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "facegen.cli", "serve", "--bundle", tiny_bundles["vae"], "--classifier",
         tiny_bundles["classifier"], "--fused", flag, "--port", str(port), "--direct-port", str(first_replica_port)],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, urls = time.monotonic() + 240, []
        while not urls or (flag == "--direct-ingress" and len(urls) < 2):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
            urls = re.findall(r"(?:web page|direct ingress, no proxy): (http://[\d.:]+)/", log.read_text())
        url = urls[-1]  # HAProxy's is the service's URL; direct ingress prints the replica's after it
        assert url == f"http://127.0.0.1:{port}" if flag == "--haproxy" else url != f"http://127.0.0.1:{port}"
        if flag == "--haproxy":
            assert _haproxy_processes(port), "no HAProxy serves the port"
            assert "HAProxy in front" in log.read_text()

        status, headers, body = _post(f"{url}/v1/edit", {"image": _photo(), "edits": {"Smiling": 1.5},
                                                          "method": "mean_diff", "align": False})
        assert status == 200, body
        assert Image.open(io.BytesIO(base64.b64decode(body["image"])), formats=["PNG"]).size == (32, 32)
        assert "Smiling" in body["scores_after"]
        assert "decode;dur=" in headers.get("Server-Timing", headers.get("server-timing", ""))
        status, _, body = _post(f"{url}/v1/edit", {"image": "bm90IGFuIGltYWdl", "edits": {"Smiling": 1}})
        assert status == 400 and body["error"]["code"] == "not_an_image", body
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise AssertionError(f"{flag}: still running 90 s after SIGTERM: {log.read_text()[-2000:]}") from None
    assert server.returncode == 0, log.read_text()[-3000:]
    assert not _haproxy_processes(port), "HAProxy outlived the command"
