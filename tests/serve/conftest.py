"""A real Serve application on 127.0.0.1, started once for the serve tests on the session's local Ray.

The bundles are tiny untrained models written in-process (serving does not care how good a model is), with
attribute directions fitted on the tiny synthetic shards and stored the way ``facegen analyze`` stores them.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.conftest import free_port
from tests.tiny import tiny_config


def write_tiny_bundle(family: str, dest: str, shards: str, seed: int = 0) -> str:
    from facegen.bundle import update_extras, write_bundle
    from facegen.data.pipeline import read_examples
    from facegen.data.shards import read_manifest
    from facegen.latent.store import directions_extras, fit_bundle_directions
    from facegen.models import build_model
    from facegen.training.trainer import bundle_meta

    torch.manual_seed(seed)
    cfg = tiny_config(family, data={"shards": shards})
    model = build_model(cfg.model).eval()
    manifest = read_manifest(shards)
    write_bundle(dest, config=cfg.to_dict(), weights=model.state_dict(), meta=bundle_meta(manifest, [], [0]))
    if family in ("vae", "ae"):
        batch = read_examples(manifest, "train", 96)
        names = list(manifest.attribute_names)
        chosen = [n for n in ("Smiling", "Eyeglasses", "Male", "Bangs") if n in names]
        index = [names.index(n) for n in chosen]
        found = fit_bundle_directions(model, {**batch, "attrs": batch["attrs"][:, index]}, chosen)
        update_extras(dest, directions_extras(found))
    return dest


@pytest.fixture(scope="session")
def tiny_bundles(tiny_shards, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bundles")
    return {family: write_tiny_bundle(family, str(root / family), tiny_shards)
            for family in ("vae", "classifier")}


@pytest.fixture(scope="session")
def serve_url(ray_session, tiny_bundles) -> str:
    """Base URL of the editing app (VAE + classifier), batching on."""
    from ray import serve

    from serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 30})
    # align False by default: most tests send flat-colour images, which have no face to find; the alignment
    # tests (test_align_app.py) ask for it per request, as a client of the default service would get it.
    serve.run(build_app({"bundle": tiny_bundles["vae"], "classifier": tiny_bundles["classifier"],
                         "max_batch_size": 8, "batch_wait_timeout_s": 0.05, "align": False}),
              name="facegen", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "install Debian's chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
