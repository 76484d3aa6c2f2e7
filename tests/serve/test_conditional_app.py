"""A conditional generator (CVAE) served beside the main app, on its own route prefix: the condition of an
uploaded photo is read by the classifier, condition slots are editable, and generation honours them."""

from __future__ import annotations

import httpx
import pytest
import torch

from facegen.bundle import update_extras
from facegen.latent.conditions import ConditionTable

from tests.serve.conftest import write_tiny_bundle
from tests.serve.test_app import b64, error_of, png, post

pytestmark = pytest.mark.ray

APP = "facegen_cvae"


@pytest.fixture(scope="module")
def cvae_url(serve_url, tiny_bundles, tiny_shards, tmp_path_factory):
    from ray import serve

    from serve.app import build_app

    # The constrained option (an adversary head in the bundle) is served by the same app as a plain CVAE.
    bundle = write_tiny_bundle("cvae+adversary", str(tmp_path_factory.mktemp("cvae") / "bundle"), tiny_shards)
    # The conditions its training faces had (`facegen analyze` stores them), contrived: men smile, women do not
    update_extras(bundle, ConditionTable(("Male", "Smiling"), torch.tensor([[1.0, 1], [0, 0]]),
                                         torch.tensor([50.0, 50])).to_extras())
    serve.run(build_app({"bundle": bundle, "classifier": tiny_bundles["classifier"], "align": False}), name=APP,
              route_prefix="/cvae")
    yield serve_url + "/cvae"
    serve.delete(APP)


def test_condition_slots_are_the_editable_attributes(cvae_url):
    models = httpx.get(cvae_url + "/v1/models").json()
    assert models["generator"]["family"] == "cvae"
    assert [p["kind"] for p in models["generator"]["latent_parts"]][-1] == "condition"
    attributes = httpx.get(cvae_url + "/v1/attributes").json()["attributes"]
    assert [(a["name"], a["kind"]) for a in attributes] == [("Male", "value"), ("Smiling", "value")]
    # 0 off, 1 on, and a push past either end (the decoder exaggerates the attribute there)
    assert {(a["min"], a["max"]) for a in attributes} == {(-1.0, 2.0)}
    assert all("exaggerated" in a["hint"] for a in attributes)


def test_edit_reads_the_condition_with_the_classifier_then_sets_the_slot(cvae_url):
    from ray import serve

    classifier = serve.get_deployment_handle("Classifier", app_name=APP)
    body = {"image": b64(png(color=(90, 140, 200)))}
    classifier.reset_stats.remote().result()
    smiling = post(cvae_url, "/v1/edit", json={**body, "edits": {"Smiling": 1.0}})
    assert smiling.status_code == 200, smiling.text
    # One classifier row for the upload's condition, then one each for the reconstruction and the edit.
    assert classifier.stats.remote().result()["items"] == 3
    neutral = post(cvae_url, "/v1/edit", json={**body, "edits": {"Smiling": 0.0}}).json()
    assert smiling.json()["reconstruction"] == neutral["reconstruction"]  # same upload, same condition read
    assert smiling.json()["image"] != neutral["image"]  # the decoder sees the slot


def test_generate_sets_condition_slots(cvae_url):
    def faces(attributes):
        response = post(cvae_url, "/v1/generate", json={"n": 2, "seed": 5, "attributes": attributes})
        assert response.status_code == 200, response.text
        return response.json()["images"]

    assert faces({"Male": 1.0}) != faces({"Male": 0.0})
    assert faces({"Male": 1.0}) == faces({"Male": 1.0})
    # A slot set alone lands on the nearest condition training faces had; both set, as asked
    assert faces({"Male": 1.0}) == faces({"Male": 1.0, "Smiling": 1.0}) != faces({"Male": 1.0, "Smiling": 0.0})
    # Pushed past "on", the same rule holds (and the picture is another one)
    assert faces({"Male": 1.5}) == faces({"Male": 1.5, "Smiling": 1.0}) != faces({"Male": 1.0})
    response = post(cvae_url, "/v1/generate", json={"n": 2, "attributes": {"Eyeglasses": 1.0}})
    assert response.status_code == 400 and "Eyeglasses" in error_of(response)["message"]
