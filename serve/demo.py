"""The demo's last step: serve the trained bundles with Ray Serve, send one edit over HTTP, save the picture.

It uses the product's own pieces: ``serve/config.yaml`` deployed by ``serve.launch`` (what ``facegen serve``
runs, with the demo's bundles and port) and the ``facegen edit`` client's request code. ``serve`` is the
repository's Serve package, so the demo runs from the repository root, as ``make demo`` does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from PIL import Image, ImageDraw

from facegen.client import build_request, post_json
from facegen.data.pipeline import read_examples
from facegen.images import encode_png, from_uint8, open_rgb
from facegen.quality.editing import meets_editing_target
from facegen.quality.pairs import counterfactual_attributes, read_pairs
from facegen.quality.metrics import psnr
from serve.launch import serving_config, start_serving


def best_edit_attribute(analysis_json: str, method: str = "mean_diff", fallback: str = "Smiling",
                        among: Sequence[str] | None = None) -> str:
    """The attribute whose ``method`` edits flipped the classifier most often in the latent analysis's held-out
    evaluation (``facegen analyze``'s analysis.json); ``fallback`` when the analysis measured none.

    A small demo VAE renders coarse attributes (hair, hats, gender) but blurs fine ones (a smile, glasses), so
    the demo shows the edit the analysis measured to work rather than a fixed one that may not show.
    ``among`` limits the choice (to the attributes the renderer has counterfactuals of, say).
    """
    try:
        with open(analysis_json) as f:
            attributes = json.load(f)["sections"]["evaluation"]["attributes"]
    except (OSError, KeyError, ValueError):
        return fallback
    rates = {name: ((cells.get(method) or {}).get("judges", {}).get("classifier") or {}).get("flip_rate")
             for name, cells in attributes.items()}
    rates = {name: rate for name, rate in rates.items() if rate is not None and (among is None or name in among)}
    return max(rates, key=rates.get) if rates else fallback


def visible_reliable_edit(quality_json: str, method: str = "slot", among: Sequence[str] | None = None
                          ) -> str | None:
    """Among the attributes whose ``method`` edits met the editing target in ``facegen evaluate``'s quality.json
    (its first bundle), the one whose true edit changes the face most (the reconstruction furthest from the
    renderer's counterfactual: the lowest ``unedited_psnr``), so the demo shows an edit one can see and that is
    known to work; without any, the most often flipped; None when there are no ``method`` rows."""
    try:
        with open(quality_json) as f:
            rows = json.load(f)["bundles"][0]["editing"]["rows"]
    except (OSError, KeyError, IndexError, ValueError):
        return None
    rows = [row for row in rows if row.get("method") == method and (among is None or row["attribute"] in among)
            and row.get("flip_rate") is not None]
    reliable = [row for row in rows if meets_editing_target(row) and row.get("unedited_psnr") is not None]
    if reliable:
        return min(reliable, key=lambda row: row["unedited_psnr"])["attribute"]
    return max(rows, key=lambda row: row["flip_rate"])["attribute"] if rows else None


def held_out_photos(manifest, attribute: str | None = None, k: int = 8, search: int = 64) -> list[bytes]:
    """Up to ``k`` test-split faces of the demo data as PNG bytes (what a user would upload): those among the
    first ``search`` that lack ``attribute`` (by label), so that adding it is an edit one can see."""

    examples = read_examples(manifest, "test", search)
    rows = list(range(len(examples["image"])))
    if attribute in manifest.attribute_names:
        column = examples["attrs"][:, list(manifest.attribute_names).index(attribute)]
        rows = [i for i in rows if column[i] < 0.5] or rows
    return [encode_png(examples["image"][i]) for i in rows[:k]]


def counterfactual_photos(folder: str | None, attribute: str, strength: float, k: int = 8
                          ) -> list[tuple[bytes, bytes]]:
    """Up to ``k`` (original, counterfactual) PNG pairs from the renderer's counterfactual set in ``folder``
    (``facegen synth --counterfactuals``) whose counterfactual moves ``attribute`` the way ``strength`` does
    (adds it when positive); none when the folder has no pairs for the attribute."""
    if not folder or attribute not in counterfactual_attributes(folder):
        return []
    pairs = read_pairs(folder, attribute, limit=4 * k)
    wanted = int(strength > 0)
    rows = [i for i, target in enumerate(pairs.targets.tolist()) if target == wanted][:k]
    return [(encode_png(pairs.originals[i]), encode_png(pairs.counterfactuals[i])) for i in rows]


def before_after(frames: list[tuple[str, Image.Image]], path: str, scale: int = 4) -> str:
    """Captioned frames (original | reconstruction | edit [| the renderer's counterfactual]) side by side,
    enlarged ``scale`` times, saved as PNG at ``path``."""
    side, gap, caption = frames[0][1].size[0] * scale, 8, 18
    strip = Image.new("RGB", (len(frames) * side + (len(frames) - 1) * gap, side + caption), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, (title, frame) in enumerate(frames):
        strip.paste(frame.resize((side, side), Image.Resampling.NEAREST), (i * (side + gap), 0))
        draw.text((i * (side + gap) + 4, side + 3), title, fill=(0, 0, 0))
    strip.save(path)
    return path


def serve_and_edit(bundle: str, classifier: str | None, manifest, out: str, port: int,
                   attribute: str = "Smiling", strength: float = 2.0, candidates: int = 8,
                   counterfactuals: str | None = None, guide: str | None = None, label: str | None = None) -> dict:
    """Deploy the app on 127.0.0.1:``port`` (on the running local Ray), edit ``candidates`` held-out faces
    lacking ``attribute`` over HTTP and picture one. With the renderer's ``counterfactuals`` for the attribute,
    the faces are their originals, the picture ends with the true counterfactual, and it shows a face whose
    edit the classifier confirms (its score crosses 0.5; the one closest to its counterfactual) when any is.
    With a ``guide`` the service's default method, hence this edit's, is ``guided``. ``label``: what the edit
    is called in the result, captioned as setting a value (a CVAE's condition slot: the request's method does not
    apply); default: the service's method, captioned as a signed step.
    Returns ``{"url", "picture", "edit", "method", "faces_tried", "confirmed", "scores_before",
    "scores_after"}`` (and ``counterfactual_psnr``, ``reconstruction_psnr`` in dB with counterfactuals)."""
    url = start_serving(serving_config(bundle=bundle, classifier=classifier, no_classifier=not classifier,
                                       host="127.0.0.1", port=port, guide=guide))
    pairs = counterfactual_photos(counterfactuals, attribute, strength, k=candidates)
    photos = pairs or [(photo, None) for photo in held_out_photos(manifest, attribute, k=candidates)]
    tried = []
    for photo, truth in photos:
        # Held-out faces are already framed like the training faces: no face detection (align=False).
        request = build_request(photo, {attribute: strength}, [], None, align=False)
        answer = post_json(f"{url}/v1/edit", request, timeout=60)
        scores = {k: (answer.get(k) or {}).get(attribute) for k in ("scores_before", "scores_after")}
        frames = [open_rgb(photo)] + [open_rgb(base64.b64decode(answer[f])) for f in ("reconstruction", "image")]
        tried.append({"frames": frames, "truth": truth and open_rgb(truth), "method": answer["method"], **scores,
                      "confirmed": None not in scores.values()
                      and (scores["scores_before"] < 0.5 <= scores["scores_after"]) == (strength > 0)})
    for t in tried:
        t["gain"] = (t["scores_after"] - t["scores_before"]) if t["scores_before"] is not None else 0.0
        if t["truth"] is not None:
            t["counterfactual_psnr"] = _psnr(t["frames"][2], t["truth"])
            t["reconstruction_psnr"] = _psnr(t["frames"][1], t["frames"][0])
    confirmed = [t for t in tried if t["confirmed"]]
    # A confirmed edit closest to the truth; else the face the classifier saw move most.
    chosen = (max(confirmed, key=lambda t: t.get("counterfactual_psnr", t["gain"])) if confirmed
              else max(tried, key=lambda t: t["gain"]))
    sign = "+" if strength > 0 else ""
    method = label or chosen["method"]
    edit = f"{label} {attribute} = {strength:g}" if label else f"{method} {attribute} {sign}{strength:g}"
    titles = ["original", "reconstruction", edit,
              "counterfactual (renderer)"]
    frames = list(zip(titles, chosen["frames"] + ([chosen["truth"]] if chosen["truth"] is not None else [])))
    picture = before_after(frames, f"{out}/edit_before_after.png")
    result = {"url": url, "picture": picture, "edit": {attribute: strength}, "method": method,
              "faces_tried": len(tried),
              "confirmed": f"{len(confirmed)} of {len(tried)}"}
    result.update({k: chosen[k] for k in ("scores_before", "scores_after", "counterfactual_psnr",
                                          "reconstruction_psnr") if k in chosen})
    return result


def _psnr(a: Image.Image, b: Image.Image) -> float:
    return psnr(from_uint8(a).unsqueeze(0), from_uint8(b).unsqueeze(0))

