"""What the page shows beside the editor, so that a user sees the model at its best and knows what to expect:
held-out faces of the model's own domain (its training data's test split), where that data came from, how
reliably each attribute's edits worked when ``facegen analyze`` measured them, and the face frame uploads are
aligned to (measured on those same held-out faces, so an upload lands where the training faces do).

A bundle does not carry images: the gallery is read from the shards its config names (``data.shards``). When
they cannot be read here (another machine's path, no credentials) the gallery is empty and ``note`` says why;
nothing else depends on it.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Collection

from facegen import io as fsio
from facegen.align import CELEBA_FRAME, DetectorUnavailable, Frame, calibrate_frame
from facegen.data.pipeline import read_examples
from facegen.data.shards import read_manifest
from facegen.errors import FacegenError
from facegen.images import encode_png, to_uint8

GALLERY_SIZE = 12  # held-out faces on the page
GALLERY_MAX_SIDE = 256  # a gallery face is never sent larger than this (a bundle's resolution is its size)


@dataclass
class Showcase:
    """faces: PNGs of held-out faces; note: why there are none (or fewer); training: where the training data
    came from; reliability: attribute -> measured edit figures; frame: the face frame uploads are aligned to."""

    faces: list[bytes] = field(default_factory=list)
    note: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    reliability: dict[str, dict[str, Any]] = field(default_factory=dict)
    reliability_source: str | None = None
    frame: Frame = CELEBA_FRAME
    frame_source: str = "CelebA's mean aligned landmarks"


def load_showcase(bundle: str, shards: str | None, meta: dict[str, Any], method: str,
                  n: int = GALLERY_SIZE, slots: Collection[str] = ()) -> Showcase:
    """Everything the page shows about the bundle at ``bundle`` (trained on ``shards``); never raises for
    missing or unreadable extras, it says what is missing instead."""
    show = Showcase(training={"dataset": meta.get("dataset"), "shards": shards,
                              "resolution": meta.get("resolution"), "attributes": meta.get("attribute_names", [])})
    try:
        if not shards:
            raise FacegenError("the bundle's config names no training shards")
        manifest = read_manifest(shards)
        show.training["rows"] = {split: manifest.rows(split) for split in manifest.splits}
        examples = read_examples(manifest, "test", n) if manifest.rows("test") else None
    except (FacegenError, OSError, ValueError, KeyError) as exc:
        show.note = f"no held-out faces to show: {' '.join(str(exc).split())[:300]}"
        examples = None
    if examples is not None:
        pixels = list(to_uint8(examples["image"]))
        show.faces = [encode_png(_capped(p)) for p in pixels]
        try:
            measured = calibrate_frame(pixels)
        except DetectorUnavailable as exc:  # the page and edits still work; only aligning uploads does not
            measured, show.frame_source = None, f"{show.frame_source} (no face detector here: {exc})"
        if measured is not None:
            show.frame, show.frame_source = measured, f"measured on {len(pixels)} held-out faces"
    elif show.note is None:
        show.note = "no held-out faces to show: the training data has no test split"
    show.reliability, show.reliability_source = edit_reliability(bundle, method, slots)
    fidelity, source = benchmark_fidelity(bundle, method, slots)
    for attribute, figures in fidelity.items():
        show.reliability[attribute] = {**figures, **show.reliability.get(attribute, {})}
    if source:
        show.reliability_source = "; ".join(filter(None, [show.reliability_source, source]))
    return show


def _capped(pixels):
    """A face no larger than GALLERY_MAX_SIDE (bundles are small; this only guards a very large one)."""
    if max(pixels.shape[:2]) <= GALLERY_MAX_SIDE:
        return pixels
    from PIL import Image

    return Image.fromarray(pixels).resize((GALLERY_MAX_SIDE, GALLERY_MAX_SIDE), Image.Resampling.BICUBIC)


def edit_reliability(bundle: str, method: str,
                     slots: Collection[str] = ()) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Per attribute, what ``facegen analyze`` measured for ``method`` edits on held-out faces (for an attribute
    in ``slots``, a CVAE's condition entry, its ``condition`` edits: what that slider does): the primary
    judge's flip rate (how often an edit made the judge see the attribute it did not see before) and drift
    (how much the other attributes moved). ``({}, None)`` when no analysis was stored with the bundle."""
    fs, path = fsio.resolve(bundle)
    path = path.rstrip("/")
    # In the bundle, or where `facegen analyze` writes by default: analysis/ beside the bundle.
    for where in (fsio.join(path, "analysis.json"), fsio.join(posixpath.dirname(path), "analysis", "analysis.json")):
        try:
            evaluation = json.loads(fsio.read_bytes(fs, where))["sections"]["evaluation"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        judge = (evaluation.get("judges") or [None])[0]
        out = {}
        for attribute, cells in (evaluation.get("attributes") or {}).items():
            lever = "condition" if attribute in slots else method
            figures = ((cells.get(lever) or {}).get("judges") or {}).get(judge) or {}
            if figures.get("flip_rate") is not None:
                out[attribute] = {"flip_rate": round(figures["flip_rate"], 3), "drift": figures.get("drift"),
                                  "n": figures.get("n_flippable")}
        levers = f"{method} edits" + (", condition slots" if slots else "")
        return out, f"facegen analyze ({judge} judge, {levers}): {fsio.to_uri(fs, where)}"
    return {}, None


def benchmark_fidelity(bundle: str, method: str,
                       slots: Collection[str] = ()) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Per attribute, what ``facegen evaluate`` measured for ``method`` edits (``slot`` edits for an attribute in
    ``slots``) against the renderer's counterfactuals, read from ``quality/quality.json`` beside the bundle (where
    ``make demo`` and ``make editor`` write it; an entry of several bundles is found by its path): the edit's
    PSNR against the true counterfactual beside the reconstruction's PSNR against the original (the decoder's
    own blur), and the benchmark judge's flip rate and drift. ``({}, None)`` when there is none."""
    fs, path = fsio.resolve(bundle)
    path = path.rstrip("/")
    where = fsio.join(posixpath.dirname(path), "quality", "quality.json")
    try:
        entries = json.loads(fsio.read_bytes(fs, where))["bundles"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}, None
    def same(stored: str) -> bool:  # stored relative to where evaluate ran, or absolute
        stored = stored.rstrip("/")
        return bool(stored) and (stored.endswith(path) or path.endswith("/" + stored.lstrip("./")))

    mine = [e for e in entries if isinstance(e, dict) and same(str(e.get("bundle", "")))]
    if not mine and len(entries) != 1:
        return {}, None
    rows = ((mine or entries)[0].get("editing") or {}).get("rows") or []
    out = {}
    for row in rows:
        lever = "slot" if row.get("attribute") in slots else method
        if row.get("method") == lever and row.get("fidelity_psnr") is not None:
            out[row["attribute"]] = {"flip_rate": row.get("flip_rate"), "drift": row.get("drift"), "n": row.get("n"),
                                     "counterfactual_psnr": round(row["fidelity_psnr"], 2),
                                     "recon_psnr": round(row["recon_psnr"], 2) if row.get("recon_psnr") else None}
    return out, (f"facegen evaluate (against the renderer's counterfactuals): {fsio.to_uri(fs, where)}"
                 if out else None)
