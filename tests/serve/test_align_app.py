"""Face alignment of uploads, the gallery of held-out faces and what the page says about the model, over real
HTTP and in a real Chromium. The session app defaults to align=false (its other tests send flat colours):
these requests ask for alignment, as every request to a default deployment gets it."""

from __future__ import annotations

import base64
import io
import json

import httpx
import matplotlib.cbook
import pytest
from PIL import Image

from serve.showcase import edit_reliability

pytestmark = pytest.mark.ray
PORTRAIT = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # ships in matplotlib's wheel


def jpeg_of_a_wall() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 160), (180, 170, 150)).save(out, format="JPEG")
    return out.getvalue()


def png_size(text: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(text)), formats=["PNG"]).size


def test_uploads_are_aligned_or_refused_with_422(serve_url):
    portrait = base64.b64encode(open(PORTRAIT, "rb").read()).decode()
    answer = httpx.post(serve_url + "/v1/reconstruct", json={"image": portrait, "align": True}, timeout=60)
    assert answer.status_code == 200 and png_size(answer.json()["input"]) == (32, 32)

    wall = {"image": ("wall.jpg", jpeg_of_a_wall(), "image/jpeg")}
    refused = httpx.post(serve_url + "/v1/edit", files=wall, data={"edits": '{"Smiling": 1}', "align": "true"},
                         timeout=60)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "no_face" and "no face found" in error["message"] and "align=false" in error["message"]
    skipped = httpx.post(serve_url + "/v1/edit", files=wall, data={"edits": '{"Smiling": 1}', "align": "false"},
                         timeout=60)
    assert skipped.status_code == 200
    bad = httpx.post(serve_url + "/v1/reconstruct", json={"image": portrait, "align": "maybe"}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_field"


def test_gallery_and_model_facts(serve_url):
    gallery = httpx.get(serve_url + "/v1/gallery").json()
    assert len(gallery["faces"]) == 12 and gallery["note"] is None
    assert {png_size(face) for face in gallery["faces"]} == {(32, 32)}
    assert gallery["training"]["dataset"] == "celeba" and gallery["training"]["rows"]["test"] >= 12
    generator = httpx.get(serve_url + "/v1/models").json()["generator"]
    assert generator["face_frame"]["source"].startswith("measured on") or "CelebA" in generator["face_frame"]["source"]
    info = httpx.get(serve_url + "/v1/attributes").json()
    assert info["align_default"] is False and info["edit_reliability"] == {}


def test_edit_reliability_is_read_from_the_analysis_beside_the_bundle(tmp_path):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "analysis").mkdir()
    cell = {"mean_diff": {"judges": {"classifier": {"flip_rate": 0.8125, "drift": 0.04, "n_flippable": 16}}}}
    evaluation = {"judges": ["classifier"], "attributes": {"Smiling": cell, "Bangs": {"mean_diff": {"error": "x"}}}}
    (tmp_path / "analysis" / "analysis.json").write_text(json.dumps({"sections": {"evaluation": evaluation}}))
    figures, source = edit_reliability(str(tmp_path / "bundle"), "mean_diff")
    assert figures == {"Smiling": {"flip_rate": 0.812, "drift": 0.04, "n": 16}}
    assert "facegen analyze" in source and "analysis.json" in source
    assert edit_reliability(str(tmp_path / "bundle"), "boundary")[0] == {}
    assert edit_reliability(str(tmp_path / "runs" / "other"), "mean_diff") == ({}, None)


def test_the_benchmarks_counterfactual_fidelity_joins_the_analysis_figures(tmp_path):
    from serve.showcase import benchmark_fidelity, load_showcase

    (tmp_path / "bundle").mkdir()
    (tmp_path / "quality").mkdir()
    row = {"attribute": "Smiling", "method": "mean_diff", "n": 32, "flip_rate": 0.9, "drift": 0.1,
           "fidelity_psnr": 20.123, "recon_psnr": 23.456}
    other = {**row, "method": "boundary", "fidelity_psnr": 22.0}
    entry = {"bundle": str(tmp_path / "bundle"), "editing": {"rows": [row, other, {**row, "attribute": "Bald",
                                                                                   "fidelity_psnr": None}]}}
    (tmp_path / "quality" / "quality.json").write_text(json.dumps({"bundles": [entry]}))
    figures, source = benchmark_fidelity(str(tmp_path / "bundle"), "mean_diff")
    assert figures == {"Smiling": {"flip_rate": 0.9, "drift": 0.1, "n": 32, "counterfactual_psnr": 20.12,
                                   "recon_psnr": 23.46}}
    assert "counterfactuals" in source and "quality.json" in source
    assert benchmark_fidelity(str(tmp_path / "bundle"), "boundary")[0]["Smiling"]["counterfactual_psnr"] == 22.0
    assert benchmark_fidelity(str(tmp_path / "elsewhere" / "bundle"), "mean_diff") == ({}, None)

    # The analysis's own flip rate and drift win; the benchmark adds what the analysis cannot measure.
    (tmp_path / "analysis").mkdir()
    cell = {"mean_diff": {"judges": {"classifier": {"flip_rate": 0.5, "drift": 0.02, "n_flippable": 8}}}}
    (tmp_path / "analysis" / "analysis.json").write_text(json.dumps(
        {"sections": {"evaluation": {"judges": ["classifier"], "attributes": {"Smiling": cell}}}}))
    show = load_showcase(str(tmp_path / "bundle"), None, {}, "mean_diff")
    assert show.reliability["Smiling"] == {"flip_rate": 0.5, "drift": 0.02, "n": 8, "counterfactual_psnr": 20.12,
                                           "recon_psnr": 23.46}
    assert "facegen analyze" in show.reliability_source and "facegen evaluate" in show.reliability_source


def test_a_conditional_editors_sliders_show_its_slot_edits(tmp_path):
    """A CVAE's attribute sliders set its condition: their figures are the analysis's ``condition`` edits and the
    benchmark's ``slot`` rows, found in a quality.json of several bundles by the bundle's relative path."""
    from serve.showcase import benchmark_fidelity, load_showcase

    (tmp_path / "runs" / "editor" / "bundle").mkdir(parents=True)
    (tmp_path / "runs" / "editor" / "quality").mkdir()
    (tmp_path / "runs" / "editor" / "analysis").mkdir()
    slot = {"attribute": "Smiling", "method": "slot", "n": 32, "flip_rate": 0.97, "drift": 0.01,
            "fidelity_psnr": 25.0, "recon_psnr": 26.0}
    entries = [{"bundle": "runs/guide/bundle", "editing": {"rows": []}},
               {"bundle": "runs/editor/bundle", "editing": {"rows": [slot, {**slot, "method": "mean_diff",
                                                                              "fidelity_psnr": 19.0}]}}]
    (tmp_path / "runs" / "editor" / "quality" / "quality.json").write_text(json.dumps({"bundles": entries}))
    cells = {"condition": {"judges": {"classifier": {"flip_rate": 0.9, "drift": 0.02, "n_flippable": 10}}}}
    (tmp_path / "runs" / "editor" / "analysis" / "analysis.json").write_text(json.dumps(
        {"sections": {"evaluation": {"judges": ["classifier"], "attributes": {"Smiling": cells}}}}))
    bundle = str(tmp_path / "runs" / "editor" / "bundle")
    assert benchmark_fidelity(bundle, "mean_diff", slots=("Smiling",))[0]["Smiling"]["counterfactual_psnr"] == 25.0
    assert benchmark_fidelity(bundle, "mean_diff")[0]["Smiling"]["counterfactual_psnr"] == 19.0
    show = load_showcase(bundle, None, {}, "mean_diff", slots=("Smiling", "Male"))
    assert show.reliability["Smiling"] == {"flip_rate": 0.9, "drift": 0.02, "n": 10, "counterfactual_psnr": 25.0,
                                           "recon_psnr": 26.0}
    assert "condition slots" in show.reliability_source


def test_page_gallery_edit_download_and_aligned_upload(serve_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    ready = lambda d: d.find_element(By.ID, "status").text.strip() == "ready"  # noqa: E731
    browser.get(serve_url + "/")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery button")) == 12 and ready(d))
    assert "Training data: celeba-layout faces at 32 px" in browser.find_element(By.ID, "training").text
    assert "was not measured" in browser.find_element(By.ID, "reliability-source").text
    assert browser.find_element(By.ID, "download").get_attribute("hidden") is not None

    browser.find_elements(By.CSS_SELECTOR, "#gallery button")[3].click()  # a held-out face, sent unaligned
    wait.until(lambda d: d.find_element(By.ID, "reconstruction").get_attribute("src").startswith("data:image/png")
               and ready(d))
    slider = browser.find_element(By.CSS_SELECTOR, 'input[type=range][data-attribute="Smiling"]')
    slider.click()
    slider.send_keys(*[Keys.ARROW_RIGHT] * 10)
    wait.until(lambda d: d.find_element(By.ID, "download").get_attribute("hidden") is None and ready(d))
    link = browser.find_element(By.ID, "download")
    assert link.get_attribute("href") == browser.find_element(By.ID, "edited").get_attribute("src")
    assert link.get_attribute("href").startswith("data:image/png") and link.get_attribute("download")

    align = browser.find_element(By.ID, "align")
    assert not align.is_selected()  # the session app's default, as /v1/attributes says
    align.click()
    wall = tmp_path / "wall.jpg"
    wall.write_bytes(jpeg_of_a_wall())
    browser.find_element(By.ID, "file").send_keys(str(wall))
    wait.until(lambda d: "no face found" in d.find_element(By.ID, "error").text and ready(d))
    browser.find_element(By.ID, "file").send_keys(PORTRAIT)
    wait.until(lambda d: d.find_element(By.ID, "reconstruction").get_attribute("src").startswith("data:image/png")
               and ready(d) and not d.find_element(By.ID, "error").text)
    # The original shown is the aligned 32 px face the model was given, not the 512x600 photo.
    assert browser.find_element(By.ID, "original").get_attribute("src").startswith("data:image/png")


def test_without_a_face_detector_the_showcase_keeps_celebas_frame_and_says_why(tiny_shards, tmp_path, monkeypatch):
    """A lent GPU machine's own OpenCV lacked the Haar cascades and every Editor replica failed to start."""
    from facegen import align
    from serve.showcase import load_showcase

    monkeypatch.setattr(align, "FACE_CASCADES", ("no_such_cascade.xml",))
    show = load_showcase(str(tmp_path / "bundle"), tiny_shards, {}, "mean_diff")
    assert show.faces and show.frame == align.CELEBA_FRAME
    assert "no face detector here" in show.frame_source and "no_such_cascade.xml" in show.frame_source
