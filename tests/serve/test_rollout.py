"""Rolling out a new bundle (what ``serve deploy`` with a changed ``args.bundle`` does) while clients keep
sending edits: every request is answered, and afterwards every deployment serves the new bundle."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest

from tests.serve.test_resilience import _body

pytestmark = pytest.mark.ray


def test_new_bundle_rolls_out_without_dropping_requests(serve_url, tiny_bundles, tmp_path):
    from ray import serve

    from serve.app import build_app

    new_bundle = str(shutil.copytree(tiny_bundles["vae"], tmp_path / "vae_v2"))
    body, statuses, stop = _body(), [], threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                statuses.append(httpx.post(serve_url + "/v1/edit", json=body, timeout=45).status_code)
            except httpx.HTTPError as exc:
                statuses.append(type(exc).__name__)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    before = len(statuses)
    # Same settings as the session app, new bundle path: Serve starts new replicas, then drains the old ones.
    serve.run(build_app({"bundle": new_bundle, "classifier": tiny_bundles["classifier"],
                         "max_batch_size": 8, "batch_wait_timeout_s": 0.05, "align": False}),
              name="facegen", route_prefix="/")
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    assert before > 0 and len(statuses) > before + 4, "clients made no progress during the rollout"
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert httpx.get(serve_url + "/v1/models").json()["generator"]["bundle"] == new_bundle
    for name in ("Encoder", "Decoder"):
        stats = serve.get_deployment_handle(name, app_name="facegen").stats.remote().result()
        assert stats["bundle"] == new_bundle
