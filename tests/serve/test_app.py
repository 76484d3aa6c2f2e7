"""Every endpoint of the editing app over real HTTP on 127.0.0.1, and every kind of bad input."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.ray


def png(size=(48, 40), color=(200, 120, 90), mode="RGB", fmt="PNG", **save) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format=fmt, **save)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)), formats=["PNG"])


def post(url: str, path: str, **kwargs) -> httpx.Response:
    return httpx.post(url + path, timeout=60, **kwargs)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return body["error"]


# ---- happy paths ----

def test_health_models_and_attributes(serve_url):
    assert httpx.get(serve_url + "/healthz").json()["status"] == "ok"
    models = httpx.get(serve_url + "/v1/models").json()
    assert models["generator"]["family"] == "vae" and models["generator"]["resolution"] == 32
    assert set(models["generator"]["directions"]) == {"mean_diff", "boundary"}
    assert "Smiling" in models["classifier"]["attributes"]
    attributes = httpx.get(serve_url + "/v1/attributes").json()
    names = [a["name"] for a in attributes["attributes"]]
    assert names == ["Smiling", "Eyeglasses", "Male", "Bangs"]
    assert attributes["methods"] == ["mean_diff", "boundary", "conditional"]
    assert "trained on" in attributes["domain"] and "32 px" in attributes["domain"]  # the page says it
    assert "/v1/edit" in httpx.get(serve_url + "/openapi.json").json()["paths"]


def test_edit_json_and_multipart(serve_url):
    photo = png()
    body = {"image": b64(photo), "edits": {"Smiling": 2.0}, "method": "mean_diff"}
    first = post(serve_url, "/v1/edit", json=body)
    assert first.status_code == 200, first.text
    result = first.json()
    assert decoded(result["image"]).size == (32, 32) and decoded(result["reconstruction"]).size == (32, 32)
    assert set(result["scores_before"]) == set(result["scores_after"]) and "Smiling" in result["scores_after"]
    assert result["image"] != result["reconstruction"]  # the edit changed the picture
    multipart = post(serve_url, "/v1/edit", files={"image": ("face.jpg", png(fmt="JPEG"), "image/jpeg")},
                     data={"edits": json.dumps({"Smiling": 2.0}), "keep": json.dumps(["Male"]),
                           "method": "conditional"})
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["method"] == "conditional" and multipart.json()["keep"] == ["Male"]


def test_classify_reconstruct_generate_traverse(serve_url):
    photo = b64(png())
    scores = post(serve_url, "/v1/classify", json={"image": photo}).json()["scores"]
    assert all(0.0 <= p <= 1.0 for p in scores.values()) and len(scores) == 40
    assert decoded(post(serve_url, "/v1/reconstruct", json={"image": photo}).json()["image"]).size == (32, 32)
    generated = post(serve_url, "/v1/generate", json={"n": 3, "seed": 7}).json()["images"]
    again = post(serve_url, "/v1/generate", json={"n": 3, "seed": 7}).json()["images"]
    assert len(generated) == 3 and generated == again  # a seed fixes the samples
    traversal = post(serve_url, "/v1/traverse", json={"image": photo, "dimension": 2, "range": [-2, 2],
                                                      "steps": 5}).json()
    assert traversal["values"] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert decoded(traversal["image"]).size == (5 * 32, 32) and len(set(traversal["frames"])) > 1
    from_seed = post(serve_url, "/v1/traverse", json={"seed": 3, "dimension": 0}).json()
    assert len(from_seed["frames"]) == 8


def test_web_page_and_static_files_are_served(serve_url):
    page = httpx.get(serve_url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<input" in page.text and "http://" not in page.text.replace("http://127.0.0.1", "")  # no CDN


# ---- bad input: always a 4xx JSON error naming the problem ----

def _cmyk_jpeg() -> bytes:
    return png(mode="CMYK", color=(0, 255, 255, 0), fmt="JPEG")


BAD_IMAGES = {
    "not_an_image": (b"hello, this is text", 400),
    "truncated": (png(size=(64, 64))[:60], 400),
    "empty": (b"", 400),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_images_are_4xx_json(serve_url, name):
    data, status = BAD_IMAGES[name]
    for response in (post(serve_url, "/v1/edit", files={"image": ("x.png", data, "image/png")},
                          data={"edits": json.dumps({"Smiling": 1})}),
                     post(serve_url, "/v1/reconstruct", json={"image": b64(data)})):
        assert 400 <= response.status_code < 500, response.text
        error_of(response)


def test_unsupported_format_and_pixel_bomb(serve_url):
    ico = io.BytesIO()
    Image.new("RGB", (16, 16)).save(ico, format="ICO")
    response = post(serve_url, "/v1/reconstruct", json={"image": b64(ico.getvalue())})
    assert response.status_code in (400, 415) and error_of(response)
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, format="PNG")  # 81 Mpx in a few kB
    response = post(serve_url, "/v1/reconstruct", json={"image": b64(bomb.getvalue())})
    assert response.status_code == 400 and error_of(response)["code"] == "too_many_pixels"


def test_too_many_bytes_refused_with_413(serve_url):
    big = b"\0" * (16 * 1024 * 1024)
    response = post(serve_url, "/v1/reconstruct", files={"image": ("big.png", big, "image/png")})
    assert response.status_code == 413 and error_of(response)["code"] == "too_large"


@pytest.mark.parametrize("mode,color", [("RGBA", (255, 0, 0, 128)), ("L", 128), ("P", 3), ("LA", (90, 255)),
                                        ("I;16", 40000)])
def test_odd_modes_are_handled(serve_url, mode, color):
    response = post(serve_url, "/v1/reconstruct", json={"image": b64(png(mode=mode, color=color))})
    assert response.status_code == 200, response.text
    assert post(serve_url, "/v1/reconstruct", json={"image": b64(_cmyk_jpeg())}).status_code == 200


def test_animated_gif_takes_the_first_frame(serve_url):
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    assert post(serve_url, "/v1/classify", json={"image": b64(out.getvalue())}).status_code == 200


@pytest.mark.parametrize("body,code", [
    ({"edits": {"Wings": 1.0}}, "bad_edit"),
    ({"edits": {"Smiling": 1e6}}, "bad_edit"),
    ({"edits": {"Smiling": "lots"}}, "bad_field"),
    ({"edits": {}}, "bad_field"),
    ({"edits": {"Smiling": 1}, "method": "magic"}, "bad_field"),
    ({"edits": {"Smiling": 1}, "keep": ["Male"], "method": "mean_diff"}, "bad_edit"),
])
def test_bad_edits(serve_url, body, code):
    response = post(serve_url, "/v1/edit", json={"image": b64(png()), **body})
    assert response.status_code == 400 and error_of(response)["code"] == code, response.text


def test_nan_strength_and_malformed_json(serve_url):
    nan_body = '{"image": "%s", "edits": {"Smiling": NaN}}' % b64(png())
    response = post(serve_url, "/v1/edit", content=nan_body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "finite" in error_of(response)["message"]
    response = post(serve_url, "/v1/edit", content=b'{"image": ', headers={"content-type": "application/json"})
    assert response.status_code == 400 and error_of(response)["code"] == "bad_json"
    response = post(serve_url, "/v1/edit", json={"edits": {"Smiling": 1}})
    assert response.status_code == 400 and error_of(response)["code"] == "missing_image"


@pytest.mark.parametrize("body", [{"n": 0}, {"n": 10_000}, {"n": "three"}, {"seed": -1}])
def test_generate_bounds(serve_url, body):
    response = post(serve_url, "/v1/generate", json=body)
    assert response.status_code == 400 and error_of(response)


@pytest.mark.parametrize("body", ['{"dimension": 99}', '{"dimension": 0, "range": [3, -3]}',
                                  '{"dimension": 0, "range": [0, Infinity]}', '{"dimension": 0, "steps": 500}'])
def test_traverse_bounds(serve_url, body):
    response = post(serve_url, "/v1/traverse", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and error_of(response)


def test_unknown_route_is_json_404(serve_url):
    response = httpx.get(serve_url + "/v1/nothing")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


# ---- batching and resilience ----

def test_concurrent_requests_share_batches(serve_url):
    from ray import serve

    encoder = serve.get_deployment_handle("Encoder", app_name="facegen")
    encoder.reset_stats.remote().result()
    bodies = [{"image": b64(png(color=(i * 20, 80, 160))), "edits": {"Smiling": 1.0}} for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda b: post(serve_url, "/v1/edit", json=b).status_code, bodies))
    assert statuses == [200] * 12
    stats = encoder.stats.remote().result()
    assert stats["items"] == 12 and stats["max_batch_size_seen"] > 1 and stats["batches"] < 12, stats


def test_edit_client_against_the_real_app(serve_url, tmp_path, capsys):
    from facegen.cli import main

    photo, out = tmp_path / "face.png", tmp_path / "edited.png"
    photo.write_bytes(png())
    assert main(["edit", str(photo), "--set", "Smiling=1.5", "--url", serve_url, "-o", str(out)]) == 0
    assert Image.open(out, formats=["PNG"]).size == (32, 32)
    assert "Smiling" in capsys.readouterr().out
    assert main(["edit", str(photo), "--set", "Wings=1", "--url", serve_url, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Wings" in err and "\n" not in err
