"""``fused: true``: the ingress replica holds encoder, decoder and classifier, behind the same HTTP API.

Deployed as a second application beside the session's split one, on the same Serve: every answer must match
the split app's (same bundles, same request), bad requests included.
"""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.ray

APP = "facegen-fused"


def png(color=(200, 120, 90), size=(48, 40)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def pixels(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text)), formats=["PNG"]), dtype=np.int16)


@pytest.fixture(scope="module")
def fused_url(serve_url, tiny_bundles):
    from ray import serve

    from serve.app import build_app

    serve.run(build_app({"bundle": tiny_bundles["vae"], "classifier": tiny_bundles["classifier"], "fused": True,
                         "max_batch_size": 8, "batch_wait_timeout_s": 0.05, "align": False}),
              name=APP, route_prefix="/fused")
    yield serve_url + "/fused"
    serve.delete(APP)


def test_the_ingress_alone_serves_everything(fused_url):
    from ray import serve

    assert set(serve.status().applications[APP].deployments) == {"Editor"}
    assert httpx.get(fused_url + "/v1/batches").json()["fused"] is True


def test_edit_answers_as_the_split_app_does(serve_url, fused_url):
    body = {"image": png(), "edits": {"Smiling": 2.0, "Male": -1.0}, "method": "mean_diff"}
    split, fused = (httpx.post(url + "/v1/edit", json=body, timeout=60) for url in (serve_url, fused_url))
    assert split.status_code == fused.status_code == 200, (split.text, fused.text)
    a, b = split.json(), fused.json()
    for key in ("image", "reconstruction"):
        assert np.abs(pixels(a[key]) - pixels(b[key])).max() <= 1, key  # same models, same rows
    assert a["scores_before"].keys() == b["scores_before"].keys()
    for key in ("scores_before", "scores_after"):
        assert all(abs(a[key][n] - b[key][n]) < 1e-3 for n in a[key]), key
    assert {k: v for k, v in a.items() if k not in ("image", "reconstruction", "scores_before", "scores_after")} \
        == {k: v for k, v in b.items() if k not in ("image", "reconstruction", "scores_before", "scores_after")}
    stages = {part.split(";")[0] for part in fused.headers["server-timing"].split(", ")}
    assert {"body", "image", "wait", "encode", "decode", "scores", "png", "total"} <= stages


@pytest.mark.parametrize("route, body", [
    ("/v1/classify", {"image": png((30, 60, 90))}),
    ("/v1/reconstruct", {"image": png((30, 60, 90))}),
    ("/v1/generate", {"n": 2, "seed": 7}),
    ("/v1/traverse", {"seed": 3, "dimension": 1, "steps": 3}),
])
def test_other_routes_answer_as_the_split_app_does(serve_url, fused_url, route, body):
    split, fused = (httpx.post(url + route, json=body, timeout=60) for url in (serve_url, fused_url))
    assert split.status_code == fused.status_code == 200, (split.text, fused.text)
    a, b = split.json(), fused.json()
    assert a.keys() == b.keys()
    for key in ("image", "input"):
        if key in a:
            assert np.abs(pixels(a[key]) - pixels(b[key])).max() <= 1, key
    for i, (x, y) in enumerate(zip(a.get("images", []), b.get("images", []))):
        assert np.abs(pixels(x) - pixels(y)).max() <= 1, i


HOSTILE = [
    ("/v1/edit", {"image": png(), "edits": {"Wings": 1.0}}),
    ("/v1/edit", {"image": png(), "edits": {}}),
    ("/v1/edit", {"image": png(), "edits": {"Smiling": 10 ** 400}}),
    ("/v1/edit", {"image": png(), "edits": {"Smiling": 1.0}, "keep": ["Male"], "method": "mean_diff"}),
    ("/v1/edit", {"image": "not base64!", "edits": {"Smiling": 1.0}}),
    ("/v1/edit", {"image": base64.b64encode(b"GIF89a").decode(), "edits": {"Smiling": 1.0}}),
    ("/v1/edit", [1, 2]),
    ("/v1/classify", {"image": None}),
    ("/v1/generate", {"n": 99}),
    ("/v1/traverse", {"dimension": 10 ** 6}),
]


@pytest.mark.parametrize("route, body", HOSTILE)
def test_bad_requests_get_the_split_apps_4xx(serve_url, fused_url, route, body):
    split, fused = (httpx.post(url + route, json=body, timeout=60) for url in (serve_url, fused_url))
    assert 400 <= split.status_code < 500 and fused.status_code == split.status_code, (split.text, fused.text)
    assert fused.json() == split.json()


def test_concurrent_edits_share_an_ingress_batch(fused_url):
    before = httpx.get(fused_url + "/v1/batches").json()["sizes"]
    bodies = [{"image": png((i * 20, 80, 160)), "edits": {"Smiling": 1.0}} for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda b: httpx.post(fused_url + "/v1/edit", json=b, timeout=60).status_code,
                                 bodies))
    assert statuses == [200] * 12
    after = httpx.get(fused_url + "/v1/batches").json()["sizes"]
    grown = {int(k): v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    assert sum(k * v for k, v in grown.items()) == 12 and max(grown) > 1, grown
    passes = httpx.get(fused_url + "/v1/batches").json()["model_passes"]
    assert max(int(rows) for rows in passes) > 2, passes  # more than one edit's two rows in a forward pass
