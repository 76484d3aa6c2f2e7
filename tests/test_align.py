"""Face alignment (facegen/align.py) on a real photo shipped in a wheel and on rendered faces pasted into
larger canvases at known offsets; ``facegen prepare --align`` on a raw photo folder. No Ray."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

from facegen import align
from facegen.align import (CELEBA_FRAME, DetectorUnavailable, NoFace, align_face, calibrate_frame, cut_square,
                           detect_face, square_of)
from facegen.data.synth import CANVAS, sample_face
from facegen.data.synth_render import render_face

SIZE, (LEFT, TOP, SIDE) = CANVAS["celeba"]  # 178x218, the face square (CelebA's 140 px crop) at (19, 39)


def grace_hopper() -> Image.Image:
    """matplotlib's sample portrait (512x600 JPEG, inside the matplotlib wheel): a real frontal face."""
    return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def rendered(index: int, seed: int = 7) -> np.ndarray:
    face, rng = sample_face(seed, index, index // 5, "celeba")
    return np.asarray(render_face(face, rng, SIZE, (LEFT, TOP, SIDE)))


def pasted(face: np.ndarray, offset: tuple[int, int], canvas=(560, 470), seed: int = 0) -> np.ndarray:
    """``face`` pasted at ``offset`` (x, y) into a larger canvas of a flat colour with pixel noise."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 220, 3) + rng.normal(0, 10, (canvas[1], canvas[0], 3))
    out = np.clip(background, 0, 255).astype(np.uint8)
    out[offset[1]:offset[1] + face.shape[0], offset[0]:offset[0] + face.shape[1]] = face
    return out


def test_a_real_photo_is_framed_like_celeba():
    photo = np.asarray(grace_hopper())
    face = detect_face(photo)
    (lx, ly), (rx, ry) = face.eyes
    # Her eyes in this portrait are near (215, 195) and (290, 192) (behind glasses, whose rims the eye
    # cascade also finds).
    assert 195 < lx < 240 and 270 < rx < 315 and abs(ly - 193) < 15 and abs(ry - 193) < 15
    aligned = align_face(Image.fromarray(photo), 256)
    assert aligned.size == (256, 256)
    # Found again in the aligned face, the eyes sit where CelebA's aligned crops have them.
    (lx, ly), (rx, ry) = detect_face(np.asarray(aligned)).eyes
    assert abs((ly + ry) / 2 / 256 - CELEBA_FRAME.eye_y) < 0.04
    assert abs((rx - lx) / 256 / CELEBA_FRAME.eye_gap - 1) < 0.15 and abs((lx + rx) / 2 / 256 - 0.5) < 0.04


def test_roll_is_levelled():
    photo = grace_hopper().rotate(12, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(90, 120, 160))
    face = detect_face(np.asarray(photo))
    cx, cy, side, angle = square_of(face, CELEBA_FRAME)
    if face.eyes_found:  # the cascade found both eyes: the roll is undone (PIL rotates counter-clockwise)
        assert math.degrees(angle) == pytest.approx(-12, abs=6)
    assert align_face(photo, 64).size == (64, 64)


@pytest.mark.parametrize("image", [np.full((240, 320, 3), (200, 120, 90), np.uint8),
                                   np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)],
                         ids=["flat", "noise"])
def test_no_face_is_said(image):
    with pytest.raises(NoFace, match="no face found in the"):
        detect_face(image)


def test_rendered_faces_are_found_where_they_were_pasted():
    """24 rendered faces, each pasted at a known offset into a larger noisy canvas: the square found must be
    about where the renderer drew the face (heads vary in size by +-15%, and more with age)."""
    frame = calibrate_frame([rendered(i)[TOP:TOP + SIDE, LEFT:LEFT + SIDE] for i in range(100, 116)])
    assert frame is not None and 0.5 < frame.eye_y < 0.6  # the renderer's eye line is at 0.55
    rng = np.random.default_rng(1)
    found = 0
    for i in range(24):
        offset = (int(rng.integers(0, 560 - SIZE[0])), int(rng.integers(0, 470 - SIZE[1])))
        try:
            cx, cy, side, angle = square_of(detect_face(pasted(rendered(i), offset, seed=i)), frame)
        except NoFace:
            continue
        found += 1
        assert abs(cx - (offset[0] + LEFT + SIDE / 2)) < 0.1 * SIDE, i
        assert abs(cy - (offset[1] + TOP + SIDE / 2)) < 0.1 * SIDE and 0.75 < side / SIDE < 1.4, i
        assert abs(angle) < math.radians(5)  # the renderer draws level eyes
    assert found >= 16  # measured: 19 of these 24 (Haar cascades learnt photos, not cartoons)


def test_the_cut_square_is_the_rendered_face():
    face = rendered(3)
    square = (LEFT + SIDE / 2, TOP + SIDE / 2, SIDE, 0.0)  # the renderer's own face square, no roll
    cut = np.asarray(cut_square(pasted(face, (200, 120)), (square[0] + 200, square[1] + 120, SIDE, 0.0), 64))
    expected = np.asarray(Image.fromarray(face).resize((64, 64), Image.Resampling.BICUBIC,
                                                       box=(LEFT, TOP, LEFT + SIDE, TOP + SIDE)))
    assert np.abs(cut.astype(int) - expected).mean() < 3  # same crop, resampled through a different path


def test_prepare_aligns_a_raw_photo_folder(tmp_path, capsys):
    """``facegen prepare --align``: a CelebA-layout folder of raw photos (rendered faces pasted into larger
    canvases, one photo with no face) becomes shards of aligned faces; the faceless photo is skipped."""
    import glob
    import os

    from facegen.cli import main
    from facegen.data.shards import read_manifest
    from facegen.data.synth import write_synthetic

    root = str(tmp_path / "raw")
    write_synthetic(root, n=10, seed=7, layout="celeba", progress=False, workers=1)
    paths = sorted(glob.glob(os.path.join(root, "img_align_celeba", "*.jpg")))
    for i, path in enumerate(paths):
        photo = np.asarray(Image.open(path, formats=["JPEG"]).convert("RGB"))
        canvas = np.full((300, 260, 3), 128, np.uint8) if i == 0 else pasted(photo, (40 + i, 30), (300, 330), i)
        Image.fromarray(canvas).save(path, format="JPEG", quality=92)
    out = str(tmp_path / "shards")
    args = ["prepare", "--dataset", "celeba", "--src", root, "--out", out, "--resolution", "32", "--align",
            "--workers", "1", "--no-progress"]
    assert main(args) == 0
    manifest = read_manifest(out)
    assert manifest.params["crop"] == ["align"]
    skipped = {entry["key"]: entry["reason"] for entry in manifest.skipped}
    assert os.path.basename(paths[0]) in skipped and all("no face found" in r for r in skipped.values())
    assert sum(manifest.rows(s) for s in manifest.splits) == len(paths) - len(skipped) >= len(paths) // 2
    capsys.readouterr()
    assert main(["prepare", "--dataset", "digits", "--out", str(tmp_path / "d"), "--align"]) == 2
    assert capsys.readouterr().err.strip() == "error: --align: digits images are digits, not faces"


def test_an_opencv_without_the_cascades_says_so_and_an_upload_to_align_is_a_503(monkeypatch):
    """A lent GPU machine's own cv2 lacked objdetect: the replica must start, and say what is wrong."""
    from serve.images import BadImage, decode_image

    monkeypatch.setattr(align, "FACE_CASCADES", ("no_such_cascade.xml",))  # real OpenCV, a file it lacks
    with pytest.raises(DetectorUnavailable, match="no_such_cascade.xml is missing from cv2.data"):
        detect_face(np.asarray(grace_hopper()))
    with pytest.raises(DetectorUnavailable):
        calibrate_frame([np.asarray(grace_hopper())])
    photo = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    with pytest.raises(BadImage, match="cannot align faces.*set align=false") as refused:
        decode_image(photo, 64, frame=CELEBA_FRAME)
    assert refused.value.status == 503 and refused.value.code == "no_face_detector"
    assert decode_image(photo, 64).shape == (3, 64, 64)  # without alignment the upload still works
