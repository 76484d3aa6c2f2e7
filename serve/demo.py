"""The demo's last step: serve the trained bundles with Ray Serve, send one edit over HTTP, save the picture.

It uses the product's own pieces: ``serve/config.yaml`` deployed by ``serve.launch`` (what ``facegen serve``
runs, with the demo's bundles and port) and the ``facegen edit`` client's request code. ``serve`` is the
repository's Serve package, so the demo runs from the repository root, as ``make demo`` does.
"""

from __future__ import annotations

import base64
import json

from PIL import Image

from facegen.client import build_request, post_json
from facegen.data.pipeline import read_examples
from facegen.images import encode_png, open_rgb
from serve.launch import serving_config, start_serving


def best_edit_attribute(analysis_json: str, method: str = "mean_diff", fallback: str = "Smiling") -> str:
    """The attribute whose ``method`` edits flipped the classifier most often in the latent analysis's held-out
    evaluation (``facegen analyze``'s analysis.json); ``fallback`` when the analysis measured none.

    A small demo VAE renders coarse attributes (hair, hats, gender) but blurs fine ones (a smile, glasses), so
    the demo shows the edit the analysis measured to work rather than a fixed one that may not show.
    """
    try:
        with open(analysis_json) as f:
            attributes = json.load(f)["sections"]["evaluation"]["attributes"]
    except (OSError, KeyError, ValueError):
        return fallback
    rates = {name: ((cells.get(method) or {}).get("judges", {}).get("classifier") or {}).get("flip_rate")
             for name, cells in attributes.items()}
    rates = {name: rate for name, rate in rates.items() if rate is not None}
    return max(rates, key=rates.get) if rates else fallback


def held_out_photos(manifest, attribute: str | None = None, k: int = 8, search: int = 64) -> list[bytes]:
    """Up to ``k`` test-split faces of the demo data as PNG bytes (what a user would upload): those among the
    first ``search`` that lack ``attribute`` (by label), so that adding it is an edit one can see."""

    examples = read_examples(manifest, "test", search)
    rows = list(range(len(examples["image"])))
    if attribute in manifest.attribute_names:
        column = examples["attrs"][:, list(manifest.attribute_names).index(attribute)]
        rows = [i for i in rows if column[i] < 0.5] or rows
    return [encode_png(examples["image"][i]) for i in rows[:k]]


def before_after(photo: bytes, answer: dict, path: str, scale: int = 4) -> str:
    """Original | reconstruction | edit, side by side, enlarged ``scale`` times, saved as PNG at ``path``."""
    frames = [open_rgb(photo)] + [open_rgb(base64.b64decode(answer[field])) for field in ("reconstruction", "image")]
    side = frames[1].size[0] * scale
    strip = Image.new("RGB", (3 * side + 2 * 8, side), (255, 255, 255))
    for i, frame in enumerate(frames):
        strip.paste(frame.resize((side, side), Image.Resampling.NEAREST), (i * (side + 8), 0))
    strip.save(path)
    return path


def serve_and_edit(bundle: str, classifier: str | None, manifest, out: str, port: int,
                   attribute: str = "Smiling", strength: float = 2.0, candidates: int = 8) -> dict:
    """Deploy the app on 127.0.0.1:``port`` (on the running local Ray), edit ``candidates`` held-out faces
    lacking ``attribute`` over HTTP and picture the one the edit moved most; returns
    ``{"url", "picture", "edit", "faces_tried", "scores_before", "scores_after"}``."""
    url = start_serving(serving_config(bundle=bundle, classifier=classifier, no_classifier=not classifier,
                                       host="127.0.0.1", port=port))
    tried = []
    for photo in held_out_photos(manifest, attribute, k=candidates):
        # Held-out faces are already framed like the training faces: no face detection (align=False).
        request = build_request(photo, {attribute: strength}, [], None, align=False)
        answer = post_json(f"{url}/v1/edit", request, timeout=60)
        scores = {k: (answer.get(k) or {}).get(attribute) for k in ("scores_before", "scores_after")}
        gain = (scores["scores_after"] - scores["scores_before"]) if None not in scores.values() else 0.0
        tried.append((gain, photo, answer, scores))
    # The face the edit moved most, as judged by the classifier (the first one when there is no classifier).
    gain, photo, answer, scores = max(tried, key=lambda t: t[0])
    picture = before_after(photo, answer, f"{out}/edit_before_after.png")
    return {"url": url, "picture": picture, "edit": {attribute: strength}, "faces_tried": len(tried), **scores}

