"""The demo's last step: serve the trained bundles with Ray Serve, send one edit over HTTP, save the picture.

It uses the product's own pieces: ``serve.app.build_app`` (the same app ``serve run serve/config.yaml``
deploys) and the ``facegen edit`` client's request code. ``serve`` is the repository's Serve package, so
the demo runs from the repository root, as ``make demo`` does.
"""

from __future__ import annotations

import base64
import io
import signal
import sys
import threading

from PIL import Image

from facegen.client import build_request, post_json


def held_out_photo(manifest) -> bytes:
    """One test-split face of the demo data, as PNG bytes (what a user would upload)."""
    from facegen.data.pipeline import read_examples
    from facegen.latent.grids import to_pil

    image = read_examples(manifest, "test", 1)["image"][0]
    out = io.BytesIO()
    to_pil(image).save(out, format="PNG")
    return out.getvalue()


def before_after(photo: bytes, answer: dict, path: str, scale: int = 4) -> str:
    """Original | reconstruction | edit, side by side, enlarged ``scale`` times, saved as PNG at ``path``."""
    frames = [Image.open(io.BytesIO(photo), formats=["PNG"]).convert("RGB")]
    for field in ("reconstruction", "image"):
        frames.append(Image.open(io.BytesIO(base64.b64decode(answer[field])), formats=["PNG"]).convert("RGB"))
    side = frames[1].size[0] * scale
    strip = Image.new("RGB", (3 * side + 2 * 8, side), (255, 255, 255))
    for i, frame in enumerate(frames):
        strip.paste(frame.resize((side, side), Image.Resampling.NEAREST), (i * (side + 8), 0))
    strip.save(path)
    return path


def serve_and_edit(bundle: str, classifier: str | None, manifest, out: str, port: int,
                   attribute: str = "Smiling", strength: float = 2.0) -> dict:
    """Deploy the app on 127.0.0.1:``port`` (on the running local Ray), edit one held-out face; returns
    ``{"url", "picture", "scores_before", "scores_after"}``."""
    from ray import serve

    from serve.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 30})
    serve.run(build_app({"bundle": bundle, "classifier": classifier}), name="facegen", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    photo = held_out_photo(manifest)
    answer = post_json(f"{url}/v1/edit", build_request(photo, {attribute: strength}, [], None), timeout=60)
    picture = before_after(photo, answer, f"{out}/edit_before_after.png")
    scores = {k: (answer.get(k) or {}).get(attribute) for k in ("scores_before", "scores_after")}
    return {"url": url, "picture": picture, "edit": {attribute: strength}, **scores}


def wait_for_ctrl_c() -> None:
    """Block until Ctrl-C (or SIGTERM), so the printed URL keeps working while someone tries it."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    print("\nstopping the server", file=sys.stderr)


def stop_serving() -> None:
    from ray import serve

    serve.shutdown()

