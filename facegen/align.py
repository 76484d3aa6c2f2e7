"""Face alignment: find the face in a photo and cut it out the way a dataset's aligned crops are cut.

CelebA's aligned images put the eyes at a fixed height and spacing (the 140 px centre square of the 178x218
frame holds the face); a model trained on them reproduces faces framed that way and blurs anything else. So
an upload (``serve/``) or a raw photo folder (``facegen prepare --align``) is framed alike before encoding:

1. **Detect** the face with OpenCV's Haar cascades, which ship inside the ``opencv-python-headless`` wheel
   (nothing is downloaded at run time). Two frontal cascades vote; the largest face wins.
2. **Eyes**: the eye cascade inside the face's upper half gives the eye centres (and so the head's roll) when
   it finds a plausible pair; otherwise they are placed where the face cascade's box puts eyes on average.
3. **Frame**: a similarity transform (rotation, scale, shift) puts the eyes where a :class:`Frame` says they
   sit in the training square, then the square is resized like every other face (:mod:`facegen.images`).

A :class:`Frame` is CelebA's (from the dataset's mean aligned landmarks) or is measured on a domain's own
aligned faces with the same detector (:func:`calibrate_frame`): whatever the cascades' bias on that domain
(cartoon faces included), an upload then lands where that domain's training faces do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from facegen.errors import FacegenError
from facegen.images import preprocess

FACE_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
EYE_CASCADE = "haarcascade_eye.xml"
# Faces are searched on a copy whose shorter side is at most DETECT_SHORT px, down to MIN_FACE px (the
# cascades' own window): faces under ~7% of a photo's shorter side are not looked for, which keeps a 12 Mpx
# upload as cheap as a small one.
DETECT_SHORT, MIN_FACE = 320, 24
EYE_SEARCH_WIDTH = 160  # the face's upper part is searched for eyes on a copy this wide
CALIBRATE_SIDE = 160  # a domain's small training squares are enlarged to this side to be measured
MIN_NEIGHBOURS = 2  # overlapping hits a cascade needs to call it a face (1 finds more cartoons, and walls)
# Where the face cascade's box puts the eyes on average, as fractions of the box (measured on rendered faces
# with known eyes and on matplotlib's Grace Hopper photo; see tests/test_align.py).
BOX_EYE_Y, BOX_EYE_HALF_GAP = 0.40, 0.165
DETAIL_SIDE = 4  # the rotated square is cut at up to this many times the output side, then resized


@dataclass(frozen=True)
class Frame:
    """Where the eyes sit in an aligned training square."""

    eye_y: float
    """Height of the eye centres, as a fraction of the square's side from its top."""
    eye_gap: float
    """Distance between the two eye centres, as a fraction of the square's side."""
    centre_x: float = 0.5
    """Horizontal position of the point midway between the eyes, as a fraction of the side."""


ALIGN_CROP = ("align",)  # a dataset's crop (SourceDataset.crop, the manifest's params) for raw photos aligned here
# CelebA's mean aligned landmarks (eyes near (69, 111) and (108, 111) in the 178x218 frame) in the 140 px
# centre square at (19, 39): eyes 38 px apart at height 72.
CELEBA_FRAME = Frame(eye_y=72.4 / 140, eye_gap=38.3 / 140)


@dataclass(frozen=True)
class Face:
    """A detected face: its box ``(x, y, w, h)`` and its two eye centres ``((x, y), (x, y))``, left first,
    in pixels of the photo; ``eyes_found`` says whether the eye cascade found them (else the box placed them)."""

    box: tuple[float, float, float, float]
    eyes: tuple[tuple[float, float], tuple[float, float]]
    eyes_found: bool


class NoFace(ValueError):
    """The photo has no face the detector can find."""


class DetectorUnavailable(FacegenError):
    """This OpenCV cannot detect faces: a build without objdetect, or its Haar cascades missing (the CLI says
    so in one line; the server answers 503)."""


_cascades: dict[str, cv2.CascadeClassifier] = {}  # annotations are not evaluated (a cv2 may lack the class)


def _cascade(name: str) -> cv2.CascadeClassifier:
    if name not in _cascades:  # loaded once per process: parsing the XML costs ~50 ms
        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):  # e.g. a GPU image's own cv2
            raise DetectorUnavailable(f"the OpenCV at {getattr(cv2, '__file__', '?')} has no Haar cascades; "
                                      "install opencv-python-headless<5")
        classifier = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        if classifier.empty():
            raise DetectorUnavailable(f"OpenCV's {name} is missing from cv2.data; reinstall opencv-python-headless<5")
        _cascades[name] = classifier
    return _cascades[name]


def _gray(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(pixels[..., :3]), cv2.COLOR_RGB2GRAY)


def _eye_pair(gray: np.ndarray, box: tuple[float, float, float, float]):
    """The eye cascade's pair in the box's upper part nearest to where the box puts eyes, or None when no
    pair is plausible: one eye each side, level with the box's eye line within 12% of the box, their gap
    within -25%/+30% of the box's (glasses rims and brows are found too; this keeps them out)."""
    x, y, w, h = box
    x0, y0 = max(int(x), 0), max(int(y), 0)
    top = gray[y0:max(int(y + 0.6 * h), 0), x0:max(int(x + w), 0)]
    if top.size == 0:
        return None
    k = EYE_SEARCH_WIDTH / top.shape[1]  # searched on a copy of fixed width: same cost for any photo
    top = cv2.resize(top, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    found = _cascade(EYE_CASCADE).detectMultiScale(top, 1.05, 2, minSize=(16, 16), maxSize=(80, 80))
    centres = [(x0 + (ex + ew / 2) / k, y0 + (ey + eh / 2) / k) for ex, ey, ew, eh in found]
    line, gap = y + BOX_EYE_Y * h, 2 * BOX_EYE_HALF_GAP * w
    pairs = [(a, b) for a in centres for b in centres if a[0] < x + w / 2 <= b[0]
             and abs(a[1] - line) < 0.12 * h and abs(b[1] - line) < 0.12 * h and 0.75 < (b[0] - a[0]) / gap < 1.3]
    if not pairs:
        return None
    return min(pairs, key=lambda p: abs((p[1][0] - p[0][0]) / gap - 1) + abs((p[0][1] + p[1][1]) / 2 - line) / h)


def detect_face(pixels: np.ndarray) -> Face:
    """The largest face in an ``(H, W, 3)`` RGB (or ``(H, W)`` gray) uint8 image; raises :class:`NoFace`."""
    gray = _gray(pixels)
    scale = min(1.0, DETECT_SHORT / min(gray.shape))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    boxes = []
    for name in FACE_CASCADES:
        found = _cascade(name).detectMultiScale(small, 1.05, MIN_NEIGHBOURS, minSize=(MIN_FACE, MIN_FACE))
        boxes.extend(tuple(float(v) / scale for v in b) for b in found)
    if not boxes:
        raise NoFace(f"no face found in the {gray.shape[1]}x{gray.shape[0]} image")
    box = max(boxes, key=lambda b: b[2] * b[3])
    eyes = _eye_pair(gray, box)
    if eyes is not None:
        return Face(box, eyes, True)
    x, y, w, h = box
    ey = y + BOX_EYE_Y * h
    return Face(box, ((x + (0.5 - BOX_EYE_HALF_GAP) * w, ey), (x + (0.5 + BOX_EYE_HALF_GAP) * w, ey)), False)


def square_of(face: Face, frame: Frame) -> tuple[float, float, float, float]:
    """``(cx, cy, side, angle)``: the centre, side (pixels) and roll (radians) of the photo's square that
    ``frame`` makes the training square."""
    (lx, ly), (rx, ry) = face.eyes
    gap, angle = math.hypot(rx - lx, ry - ly), math.atan2(ry - ly, rx - lx)
    side = gap / frame.eye_gap
    mx, my = (lx + rx) / 2, (ly + ry) / 2
    # From the eyes' midpoint to the square's centre, in the square's (rotated) axes.
    dx, dy = (0.5 - frame.centre_x) * side, (0.5 - frame.eye_y) * side
    cos, sin = math.cos(angle), math.sin(angle)
    return mx + dx * cos - dy * sin, my + dx * sin + dy * cos, side, angle


def cut_square(pixels: np.ndarray, square: tuple[float, float, float, float], resolution: int) -> Image.Image:
    """The (rotated) square of ``pixels`` as an RGB ``resolution`` x ``resolution`` image: cut at up to
    ``DETAIL_SIDE`` x the output side (edges replicated where it leaves the photo), then resized like every
    training face."""
    cx, cy, side, angle = square
    out = int(min(max(resolution, round(side)), DETAIL_SIDE * resolution))
    if side > 2 * out:  # shrink the photo first, averaging areas: a cubic warp alone would alias
        factor = out / side
        pixels = cv2.resize(pixels, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        cx, cy, side = cx * factor, cy * factor, side * factor
    k = out / side
    cos, sin = math.cos(angle) * k, math.sin(angle) * k
    # Photo point -> output pixel: undo the roll, scale, centre. OpenCV indexes pixel centres, hence the 0.5s.
    cx, cy, mid = cx - 0.5, cy - 0.5, (out - 1) / 2
    matrix = np.array([[cos, sin, mid - cos * cx - sin * cy], [-sin, cos, mid + sin * cx - cos * cy]])
    cut = cv2.warpAffine(np.ascontiguousarray(pixels), matrix, (out, out), flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)
    return preprocess(Image.fromarray(cut), ("full",), resolution)


def align_face(image: Image.Image | np.ndarray, resolution: int, frame: Frame = CELEBA_FRAME) -> Image.Image:
    """The face of an RGB photo, framed per ``frame``, as an RGB ``resolution`` square; raises :class:`NoFace`."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    return cut_square(pixels, square_of(detect_face(pixels), frame), resolution)


def calibrate_frame(faces: list[np.ndarray], minimum: int = 4) -> Frame | None:
    """The :class:`Frame` of a domain, measured with this detector on its aligned training squares (uint8
    ``(S, S, 3)``, any S: smaller ones are enlarged to CALIBRATE_SIDE first): the median eye height, gap and centre over
    the faces found. None when fewer than ``minimum`` faces are found (the caller keeps its default)."""
    measured = []
    for pixels in faces:
        side = pixels.shape[0]
        if side < CALIBRATE_SIDE:
            pixels = cv2.resize(pixels, (CALIBRATE_SIDE,) * 2, interpolation=cv2.INTER_CUBIC)
        try:
            face = detect_face(pixels)
        except NoFace:
            continue
        (lx, ly), (rx, ry) = face.eyes
        size = pixels.shape[0]
        measured.append(((ly + ry) / 2 / size, math.hypot(rx - lx, ry - ly) / size, (lx + rx) / 2 / size))
    if len(measured) < minimum:
        return None
    eye_y, gap, centre = np.median(np.array(measured), axis=0)
    return Frame(eye_y=float(eye_y), eye_gap=float(gap), centre_x=float(centre))
