"""Guided edits over HTTP: a guide classifier (not the scoring one) steers the codes where the decoder is.

Two more applications beside the session's plain one, both with a guide: the split layout (the ``Decoder``
replica runs the guided steps) and ``fused: true`` (the ingress does). Known answers: the guide reads the
edited face as more (less) of the attribute than the reconstruction when the strength is positive
(negative); both layouts return the same face; a batch that mixes guided and direction edits answers each
as if it came alone; what cannot be guided is a 4xx naming why.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tests.serve.conftest import write_tiny_bundle
from tests.serve.test_fused_app import pixels, png

pytestmark = pytest.mark.ray

SPLIT, FUSED = "facegen-guided", "facegen-guided-fused"


@pytest.fixture(scope="module")
def guide_bundle(tiny_shards, tmp_path_factory) -> str:
    return write_tiny_bundle("classifier", str(tmp_path_factory.mktemp("guide") / "guide"), tiny_shards, seed=1)


@pytest.fixture(scope="module")
def guided_urls(serve_url, tiny_bundles, guide_bundle):
    from ray import serve

    from serve.app import build_app

    common = {"bundle": tiny_bundles["vae"], "classifier": tiny_bundles["classifier"], "guide": guide_bundle,
              "max_batch_size": 8, "batch_wait_timeout_s": 0.05, "align": False}
    serve.run(build_app(common), name=SPLIT, route_prefix="/guided")
    serve.run(build_app({**common, "fused": True}), name=FUSED, route_prefix="/guided-fused")
    yield {"split": serve_url + "/guided", "fused": serve_url + "/guided-fused"}
    serve.delete(SPLIT)
    serve.delete(FUSED)


def guide_reading(guide_bundle: str, image: str, attribute: str) -> float:
    """P(attribute) by the guide for a returned PNG."""
    from facegen.bundle import load_bundle
    from facegen.images import from_uint8

    model = load_bundle(guide_bundle).model
    with torch.no_grad():
        proba = model.predict_proba(from_uint8(pixels(image).astype(np.uint8))[None])
    return float(proba[0, list(model.attribute_names).index(attribute)])


def test_a_served_guide_makes_guided_the_default_method(guided_urls, serve_url):
    info = httpx.get(guided_urls["split"] + "/v1/attributes").json()
    assert info["default_method"] == "guided" and info["methods"][0] == "guided"
    assert "Smiling" in info["guide_attributes"]
    plain = httpx.get(serve_url + "/v1/attributes").json()
    assert plain["default_method"] == "mean_diff" and "guided" not in plain["methods"]
    assert plain["guide_attributes"] == []


@pytest.mark.parametrize("layout", ["split", "fused"])
def test_a_guided_edit_moves_the_guides_reading_the_way_its_sign_says(guided_urls, guide_bundle, layout):
    readings = {}
    for strength in (4.0, -4.0):
        answer = httpx.post(guided_urls[layout] + "/v1/edit", timeout=120, json={
            "image": png(), "edits": {"Smiling": strength}, "method": "guided"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["method"] == "guided"
        assert "guided" in {part.split(";")[0] for part in answer.headers["server-timing"].split(", ")}
        readings[strength] = (guide_reading(guide_bundle, body["reconstruction"], "Smiling"),
                              guide_reading(guide_bundle, body["image"], "Smiling"))
    (start, up), (_, down) = readings[4.0], readings[-4.0]
    assert up > start + 0.05 and down < start - 0.05, readings


@pytest.mark.parametrize("layout", ["split", "fused"])
def test_a_residual_edit_is_the_upload_plus_what_the_edit_changed(guided_urls, guide_bundle, layout):
    url, colour = guided_urls[layout] + "/v1/edit", (90, 160, 40)
    common = {"image": png(colour), "edits": {"Smiling": 3.0}, "method": "mean_diff"}
    plain = httpx.post(url, json=common, timeout=120).json()
    kept = httpx.post(url, json={**common, "residual": True}, timeout=120).json()
    assert plain["residual"] is False and kept["residual"] is True
    # The upload is one colour: the answer is that colour plus the decode's change, up to PNG rounding.
    expected = np.clip(np.array(colour) + pixels(plain["image"]) - pixels(plain["reconstruction"]), 0, 255)
    assert np.abs(pixels(kept["image"]) - expected).max() <= 2
    assert np.abs(pixels(kept["image"]) - pixels(plain["image"])).max() > 10  # not the decode itself
    # A guided residual edit steers the composed picture: the guide reads the change in what comes back.
    up, down = (httpx.post(url, json={**common, "method": "guided", "residual": True, "edits": {"Smiling": s}},
                           timeout=120).json()["image"] for s in (4.0, -4.0))
    assert guide_reading(guide_bundle, up, "Smiling") > guide_reading(guide_bundle, down, "Smiling") + 0.05


def test_both_layouts_steer_to_the_same_face(guided_urls):
    body = {"image": png((90, 160, 40)), "edits": {"Male": 3.0, "Bangs": -2.0}}  # the default method: guided
    split, fused = (httpx.post(guided_urls[k] + "/v1/edit", json=body, timeout=120) for k in ("split", "fused"))
    assert split.status_code == fused.status_code == 200, (split.text, fused.text)
    assert split.json()["method"] == fused.json()["method"] == "guided"
    for key in ("image", "reconstruction"):
        assert np.abs(pixels(split.json()[key]) - pixels(fused.json()[key])).max() <= 2, key


def test_a_batch_mixing_guided_and_direction_edits_answers_each_as_alone(guided_urls):
    url = guided_urls["split"] + "/v1/edit"
    bodies = [{"image": png((40 * i, 90, 200 - 30 * i)), "edits": {"Smiling": 2.0 if i % 2 else -3.0},
               "method": "guided" if i % 2 else "mean_diff"} for i in range(6)]
    alone = [httpx.post(url, json=b, timeout=120).json()["image"] for b in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda b: httpx.post(url, json=b, timeout=120), bodies))
    assert [r.status_code for r in together] == [200] * len(bodies)
    for i, (a, b) in enumerate(zip(alone, together)):
        assert np.abs(pixels(a) - pixels(b.json()["image"])).max() <= 2, i


@pytest.mark.parametrize("body, code, says", [
    ({"edits": {"Smiling": 2.0}, "method": "guided", "keep": ["Male"]}, "bad_edit", "keep"),
    ({"edits": {"Smiling": 0.0}, "method": "guided"}, "bad_edit", "strength"),
    ({"edits": {"Smiling": 11.0}, "method": "guided"}, "bad_edit", "strength"),
    ({"edits": {"Wings": 1.0}, "method": "guided"}, "bad_edit", "does not read 'Wings'"),
    ({"edits": {"Smiling": 1.0}, "method": "guidance"}, "bad_field", "method"),
])
def test_what_cannot_be_guided_is_a_400_naming_why(guided_urls, body, code, says):
    for layout in ("split", "fused"):
        answer = httpx.post(guided_urls[layout] + "/v1/edit", json={"image": png(), **body}, timeout=60)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == code and says in answer.json()["error"]["message"], answer.text


def test_a_guided_edit_without_a_guide_is_a_400(serve_url):
    answer = httpx.post(serve_url + "/v1/edit", json={"image": png(), "edits": {"Smiling": 2.0},
                                                      "method": "guided"}, timeout=60)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "no_guide", answer.text
    assert "--guide" in answer.json()["error"]["message"]


def test_the_guide_cannot_be_the_scoring_classifier(tiny_bundles):
    from serve.app import AppArgs

    with pytest.raises(ValidationError, match="guide must be another classifier"):
        AppArgs.model_validate({"bundle": tiny_bundles["vae"], "classifier": tiny_bundles["classifier"],
                                "guide": tiny_bundles["classifier"] + "/"})
