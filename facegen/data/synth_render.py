"""Procedural face drawing for the synthetic dataset (factor sampling and layouts live in ``synth.py``).

A face is drawn with PIL at ``SUPERSAMPLE`` times the output size and reduced, which antialiases the edges
for the price of one box filter. All geometry is in "face units": the face square (the region that must
hold head, hair and hat) has side 1, and ``_Pen`` maps those units to canvas pixels. Every random choice
that is not a labelled factor (colours of clothes, hat, background) comes from the image's own generator,
so one image's bytes depend only on (seed, index).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 2
HAIR_COLORS: tuple[str, ...] = ("black", "blond", "brown", "gray")
_HAIR_RGB = np.array([(30, 24, 22), (226, 192, 112), (112, 70, 38), (178, 176, 174)], dtype=np.float32)
_SKIN_DARK, _SKIN_MID, _SKIN_LIGHT = (np.array(c, dtype=np.float32) for c in
                                      ((58, 36, 24), (196, 142, 104), (255, 234, 224)))
# Per-race skin tint (FAIRFACE_RACES order), so neighbouring tone bands also differ in hue.
_RACE_TINT = np.array([(0, 0, 4), (0, 0, 0), (12, -2, -10), (8, 8, -18), (10, 2, -6), (4, -6, -2),
                       (8, 2, 0)], dtype=np.float32)
# Age bin (FAIRFACE_AGES order) -> head size, eye size, how far (in head heights) features sit lower.
_AGE_HEAD = (0.78, 0.86, 0.94, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
_AGE_EYE = (1.5, 1.3, 1.12, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
_AGE_DROP = (0.16, 0.09, 0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_BEARD_NONE, _BEARD_GOATEE, _BEARD_FULL = 0, 1, 2


@dataclass(frozen=True)
class Face:
    """Everything that decides how one face looks (the labelled factors; see ``synth.sample_face``).

    attrs maps the rendered CelebA attribute names to 0/1. beard: 0 none, 1 goatee, 2 full beard.
    """

    attrs: dict[str, int]
    race: int
    age: int
    skin_tone: float
    face_shape: float
    hair_color: int
    curly: bool
    beard: int
    yaw: float
    face_scale: float
    lighting: float
    lighting_angle: float
    background_hue: float
    service_test: bool


def skin_rgb(tone: float, race: int) -> np.ndarray:
    """Skin colour for a tone in [0, 1] (0 darkest), piecewise between three anchors, plus the race tint."""
    if tone < 0.5:
        rgb = _SKIN_DARK + (_SKIN_MID - _SKIN_DARK) * (tone / 0.5)
    else:
        rgb = _SKIN_MID + (_SKIN_LIGHT - _SKIN_MID) * ((tone - 0.5) / 0.5)
    return np.clip(rgb + _RACE_TINT[race], 0, 255)


def _rgb(c) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(c), 0, 255))


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float], h: float | None = None):
    hue = rng.random() if h is None else h
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(*s), rng.uniform(*v))
    return int(r * 255), int(g * 255), int(b * 255)


class _Pen:
    """ImageDraw in face units: (x, y) in [0, 1] over the face square, widths in face units too."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[int, int, int], k: int):
        self.d, self.k = draw, k
        self.ox, self.oy, self.side = box[0] * k, box[1] * k, box[2] * k

    def p(self, pts):
        return [(self.ox + x * self.side, self.oy + y * self.side) for x, y in pts]

    def wid(self, w: float) -> int:
        return max(1, round(w * self.side))

    def ellipse(self, cx, cy, rx, ry, fill=None, outline=None, width=0.0):
        self.d.ellipse(self.p([(cx - rx, cy - ry), (cx + rx, cy + ry)]), fill=fill, outline=outline,
                       width=self.wid(width) if outline else 0)

    def polygon(self, pts, fill):
        self.d.polygon(self.p(pts), fill=fill)

    def line(self, pts, fill, width):
        self.d.line(self.p(pts), fill=fill, width=self.wid(width), joint="curve")

    def chord(self, cx, cy, rx, ry, start, end, fill):
        self.d.chord(self.p([(cx - rx, cy - ry), (cx + rx, cy + ry)]), start, end, fill=fill)

    def arc(self, cx, cy, rx, ry, start, end, fill, width):
        self.d.arc(self.p([(cx - rx, cy - ry), (cx + rx, cy + ry)]), start, end, fill=fill,
                   width=self.wid(width))


@dataclass(frozen=True)
class _Geom:
    """Where things are on one face, in face units (derived once from the factors)."""

    cx: float
    cy: float
    w: float  # half-width of the head
    wl: float  # left/right half-widths: yaw makes the far side narrower
    wr: float
    h: float  # half-height of the head
    dx: float  # horizontal shift of the features with yaw
    ey: float  # eye line
    eye: float  # eye size multiplier (children have big eyes)
    my: float  # mouth line
    hairline: float


def _geometry(f: Face) -> _Geom:
    male = f.attrs["Male"]
    s = f.face_scale * _AGE_HEAD[f.age]
    w = 0.235 * s * f.face_shape * (1.06 if male else 0.95)
    h = 0.29 * s
    cx, cy = 0.5 + 0.03 * f.yaw, 0.58
    return _Geom(cx=cx, cy=cy, w=w, wl=w * (1 + 0.1 * f.yaw), wr=w * (1 - 0.1 * f.yaw), h=h,
                 dx=0.2 * w * f.yaw, ey=cy - 0.1 * h + _AGE_DROP[f.age] * h, eye=_AGE_EYE[f.age],
                 my=cy + 0.56 * h + 0.5 * _AGE_DROP[f.age] * h, hairline=cy - 0.58 * h)


def _outline(g: _Geom, male: int, grow: float = 1.0, n: int = 48) -> list[tuple[float, float]]:
    """Head outline: a superellipse whose lower half is squarer for men (the jaw) and rounder for women."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    p = np.where(s > 0, 2.7 if male else 1.9, 2.1)
    x = np.sign(c) * np.abs(c) ** (2 / p)
    y = np.sign(s) * np.abs(s) ** (2 / p)
    half = np.where(c < 0, g.wl, g.wr) * grow
    return list(zip((g.cx + half * x).tolist(), (g.cy + g.h * grow * y).tolist()))


def render_face(f: Face, rng: np.random.Generator, size: tuple[int, int],
                box: tuple[int, int, int]) -> Image.Image:
    """Draw ``f`` on a ``size`` (width, height) canvas with the face square at ``box`` = (left, top, side)."""
    k = SUPERSAMPLE
    img = Image.new("RGB", (size[0] * k, size[1] * k),
                    _hsv(rng, (0.15, 0.5), (0.5, 0.9), h=f.background_hue))
    pen = _Pen(ImageDraw.Draw(img), box, k)
    g = _geometry(f)
    a = f.attrs
    skin = skin_rgb(f.skin_tone, f.race)
    hair = _HAIR_RGB[f.hair_color]
    has_hair = not a["Bald"]
    long_hair = has_hair and not a["Male"] and f.age >= 1

    pen.polygon([(g.cx - 0.4 * g.w, g.cy + 0.6 * g.h), (g.cx + 0.4 * g.w, g.cy + 0.6 * g.h),
                 (g.cx + 0.45 * g.w, 1.3), (g.cx - 0.45 * g.w, 1.3)], _rgb(skin * 0.8))  # neck
    pen.ellipse(g.cx, g.cy + g.h + 0.32, 2.2 * g.w, 0.3, fill=_hsv(rng, (0.3, 0.8), (0.2, 0.8)))  # clothes
    if has_hair:
        _back_hair(pen, g, hair, long_hair, f)
    for side, half in () if long_hair else ((-1, g.wl), (1, g.wr)):  # ears, half hidden by the head
        pen.ellipse(g.cx + side * (half + 0.01) - g.dx * 0.3, g.ey + 0.05 * g.h, 0.04, 0.07 * g.h / 0.29,
                    fill=_rgb(skin * 0.92))
    pen.polygon(_outline(g, a["Male"]), _rgb(skin))
    if a["5_o_Clock_Shadow"]:
        pen.polygon(_beard_shape(g, a["Male"]), _rgb(skin * 0.72 + np.array([8, 12, 22])))
    if a["Rosy_Cheeks"]:
        for side in (-1, 1):
            pen.ellipse(g.cx + side * 0.55 * g.w + g.dx, g.cy + 0.22 * g.h, 0.16 * g.w, 0.12 * g.w,
                        fill=_rgb(skin * 0.45 + np.array([235, 90, 105]) * 0.55))
    _wrinkles(pen, g, skin, f.age)
    if has_hair:
        _front_hair(pen, g, hair, a, f)
    _eyes(pen, g, hair, a)
    if a["Sideburns"]:
        for side, half in ((-1, g.wl), (1, g.wr)):
            x0 = g.cx + side * half * 0.97
            pen.polygon([(x0, g.hairline), (x0, g.cy + 0.3 * g.h), (x0 - side * 0.13 * g.w, g.cy + 0.3 * g.h),
                         (x0 - side * 0.16 * g.w, g.hairline)], _rgb(hair * 0.85))
    _facial_hair(pen, g, hair * 0.85, f.beard, a)
    _mouth(pen, g, skin, a, f.age)
    if a["Wearing_Hat"]:
        _hat(pen, g, _hsv(rng, (0.5, 0.9), (0.3, 0.85)))
    if a["Eyeglasses"]:
        _glasses(pen, g, _hsv(rng, (0.0, 0.6), (0.05, 0.25)))
    return _finish(img.reduce(k), f, rng)


def _back_hair(pen: _Pen, g: _Geom, hair, long_hair: bool, f: Face) -> None:
    """Hair behind the head: a cap for short hair, plus curtains down to the shoulders for long hair."""
    c = _rgb(hair)
    top = 0.78 if f.age == 0 else 1.0  # babies have little hair
    if long_hair:
        pen.polygon([(g.cx - 1.2 * g.wl, g.cy - 0.2 * g.h), (g.cx + 1.2 * g.wr, g.cy - 0.2 * g.h),
                     (g.cx + 1.3 * g.wr, g.cy + 1.25 * g.h), (g.cx - 1.3 * g.wl, g.cy + 1.25 * g.h)], c)
    pen.ellipse(g.cx, g.cy - 0.2 * g.h, 1.12 * g.w, 0.95 * g.h * top, fill=c)
    if f.curly:  # curly texture: bumps along the cap's upper edge
        for t in np.linspace(np.pi * 1.05, np.pi * 1.95, 9):
            pen.ellipse(g.cx + 1.12 * g.w * np.cos(t), g.cy - 0.2 * g.h + 0.95 * g.h * top * np.sin(t),
                        0.18 * g.w, 0.18 * g.w, fill=c)


def _front_hair(pen: _Pen, g: _Geom, hair, a: dict[str, int], f: Face) -> None:
    """Hair over the top of the face down to the hairline, and bangs down to the eyebrows."""
    c = _rgb(hair)
    ey_c, ry = g.cy - 0.2 * g.h, 0.95 * g.h * (0.78 if f.age == 0 else 1.0)
    phi = np.degrees(np.arcsin(np.clip((g.hairline - ey_c) / ry, -1, 1)))
    pen.chord(g.cx, ey_c, 1.12 * g.w, ry, 180 - phi, 360 + phi, c)
    if a["Bangs"]:
        bottom = g.ey - 0.28 * g.w * g.eye
        xs = np.linspace(g.cx - 0.9 * g.wl, g.cx + 0.9 * g.wr, 7)
        zig = [(x + g.dx * 0.5, bottom + (0.05 * g.h if i % 2 else 0.0)) for i, x in enumerate(xs)]
        pen.polygon([(g.cx - 0.95 * g.wl, g.hairline - 0.05 * g.h), (g.cx + 0.95 * g.wr, g.hairline - 0.05 * g.h)]
                    + zig[::-1], c)


def _eyes(pen: _Pen, g: _Geom, hair, a: dict[str, int]) -> None:
    """Eyes (white, iris, lid line) and eyebrows; Narrow_Eyes flattens the opening to a slit."""
    ew, eh = 0.19 * g.w * g.eye, 0.1 * g.w * g.eye
    open_h = eh * (0.35 if a["Narrow_Eyes"] else 1.0)
    for side in (-1, 1):
        ex = g.cx + side * 0.42 * g.w + g.dx
        pen.ellipse(ex, g.ey, ew, open_h, fill=(242, 240, 236))
        pen.ellipse(ex + g.dx * 0.3, g.ey, 0.55 * ew, min(0.55 * ew, open_h), fill=(52, 34, 24))
        pen.arc(ex, g.ey, ew, open_h, 180, 360, (25, 15, 12), 0.012)
        pen.line([(ex - 1.1 * ew, g.ey - eh - 0.1 * g.w), (ex, g.ey - eh - 0.15 * g.w),
                  (ex + 1.1 * ew, g.ey - eh - 0.1 * g.w)], _rgb(hair * 0.7), 0.018)
    pen.line([(g.cx + 1.3 * g.dx, g.ey + 0.1 * g.h), (g.cx + 1.6 * g.dx + 0.06 * g.w, g.cy + 0.3 * g.h),
              (g.cx + 1.6 * g.dx - 0.04 * g.w, g.cy + 0.33 * g.h)], (90, 60, 50), 0.01)  # nose


def _wrinkles(pen: _Pen, g: _Geom, skin, age: int) -> None:
    """Age lines: nasolabial folds from 30-39, eye bags from 40-49, crow's feet and forehead lines later."""
    if age < 4:
        return
    c = _rgb(skin * (0.78 - 0.04 * (age - 4)))
    wd = 0.008 + 0.002 * (age - 4)
    for side in (-1, 1):
        ex = g.cx + side * 0.42 * g.w + g.dx
        pen.line([(g.cx + g.dx + side * 0.2 * g.w, g.cy + 0.28 * g.h),
                  (g.cx + g.dx + side * 0.42 * g.w, g.my + 0.05 * g.h)], c, wd)
        if age >= 5:
            pen.arc(ex, g.ey + 0.12 * g.w, 0.17 * g.w, 0.1 * g.w, 20, 160, c, wd)
        if age >= 6:
            for dy in (-0.05, 0.05):
                pen.line([(ex + side * 0.24 * g.w, g.ey + dy * g.w),
                          (ex + side * 0.36 * g.w, g.ey + 2.4 * dy * g.w)], c, wd)
    for i in range(max(0, age - 5)):  # forehead lines (hidden under bangs or a hat brim)
        y = g.ey - 0.22 * g.h - 0.1 * g.h * i
        pen.line([(g.cx - 0.45 * g.w + g.dx, y), (g.cx + 0.45 * g.w + g.dx, y)], c, wd)


def _beard_shape(g: _Geom, male: int) -> list[tuple[float, float]]:
    """Lower face from cheek to chin, closed by a line under the nose (used for beards and stubble)."""
    pts = _outline(g, male, grow=1.04)
    lower = [(x, y) for x, y in pts if y > g.cy + 0.05 * g.h]
    return lower + [(g.cx - 0.55 * g.w + g.dx, g.cy + 0.4 * g.h), (g.cx + 0.55 * g.w + g.dx, g.cy + 0.4 * g.h)]


def _facial_hair(pen: _Pen, g: _Geom, hair, beard: int, a: dict[str, int]) -> None:
    c = _rgb(hair)
    mx = g.cx + g.dx
    if beard == _BEARD_FULL:
        pen.polygon(_beard_shape(g, 1), c)
    elif beard == _BEARD_GOATEE:
        pen.ellipse(mx, g.my + 0.25 * g.h, 0.3 * g.w, 0.24 * g.h, fill=c)
    if a["Mustache"]:
        pen.polygon([(mx - 0.46 * g.w, g.my + 0.02 * g.h), (mx - 0.3 * g.w, g.my - 0.18 * g.h),
                     (mx + 0.3 * g.w, g.my - 0.18 * g.h), (mx + 0.46 * g.w, g.my + 0.02 * g.h),
                     (mx, g.my - 0.06 * g.h)], c)


def _mouth(pen: _Pen, g: _Geom, skin, a: dict[str, int], age: int) -> None:
    """Smiling curves the mouth up and widens it; Mouth_Slightly_Open shows a dark opening with teeth."""
    lips = (196, 28, 52) if a["Wearing_Lipstick"] else _rgb(skin * 0.55 + np.array([50, 6, 10]))
    mx = g.cx + g.dx
    mw = g.w * (0.46 if a["Smiling"] else 0.34) * (0.8 if age < 2 else 1.0)
    lip_w = 0.035 * g.w * (1.5 if a["Wearing_Lipstick"] else 1.0)
    if a["Smiling"]:
        if a["Mouth_Slightly_Open"]:
            pen.chord(mx, g.my - 0.04 * g.h, mw, 0.2 * g.h, 0, 180, lips)
            pen.chord(mx, g.my - 0.04 * g.h, mw * 0.88, 0.16 * g.h, 0, 180, (50, 16, 18))
            pen.chord(mx, g.my - 0.04 * g.h, mw * 0.8, 0.07 * g.h, 0, 180, (238, 236, 226))
        else:  # an upturned crescent: lower half-ellipse minus a smaller one shifted up
            pen.chord(mx, g.my - 0.06 * g.h, mw, 0.2 * g.h, 0, 180, lips)
            pen.chord(mx, g.my - 0.12 * g.h, mw * 0.96, 0.1 * g.h, 0, 180, _rgb(skin))
    elif a["Mouth_Slightly_Open"]:
        pen.ellipse(mx, g.my, mw * 0.8, 0.09 * g.h, fill=(50, 16, 18), outline=lips, width=lip_w * 1.6)
    else:
        pen.ellipse(mx, g.my, mw, lip_w * 1.6, fill=lips)


def _hat(pen: _Pen, g: _Geom, color) -> None:
    """A crown over the top of the head and a brim at the hairline: the hair on top is hidden."""
    brim = g.hairline - 0.1 * g.h
    pen.chord(g.cx, brim, 1.15 * g.w, 0.75 * g.h, 180, 360, color)
    pen.ellipse(g.cx + g.dx * 0.5, brim, 1.45 * g.w, 0.1 * g.h, fill=_rgb(np.array(color) * 0.7))


def _glasses(pen: _Pen, g: _Geom, frame) -> None:
    """Two rims around the eyes, a bridge, and temples towards the ears."""
    rx, ry = 0.3 * g.w * g.eye, 0.2 * g.w * g.eye
    for side, half in ((-1, g.wl), (1, g.wr)):
        ex = g.cx + side * 0.42 * g.w + g.dx
        pen.ellipse(ex, g.ey, rx, ry, outline=frame, width=0.02)
        pen.line([(ex + side * rx, g.ey - 0.3 * ry), (g.cx + side * half, g.ey - 0.4 * ry)], frame, 0.016)
    pen.line([(g.cx + g.dx - 0.42 * g.w + rx, g.ey - 0.2 * ry), (g.cx + g.dx + 0.42 * g.w - rx, g.ey - 0.2 * ry)],
             frame, 0.016)


@lru_cache(maxsize=8)
def _ramps(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical coordinate ramps in [-1, 1], cached per image size."""
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    return x, y


_NOISE_SIDE = 512  # larger than any canvas, so a window always fits


@lru_cache(maxsize=1)
def _noise_texture() -> np.ndarray:
    """A fixed field of gaussian noise (sigma 3) that images take random windows of.

    Drawing fresh noise per pixel cost more than drawing the face; a window at a per-image random offset is
    just as varied for our purpose and still depends only on the image's generator.
    """
    return np.random.default_rng(20240601).normal(0.0, 3.0, (_NOISE_SIDE, _NOISE_SIDE, 3)).astype(np.float32)


def _finish(img: Image.Image, f: Face, rng: np.random.Generator) -> Image.Image:
    """Directional lighting (a brightness gradient) and a little gaussian noise."""
    arr = np.asarray(img, dtype=np.float32)
    x, y = _ramps(img.width, img.height)
    ang = 2 * np.pi * f.lighting_angle
    gain = 1.0 + f.lighting * (np.float32(np.cos(ang)) * x + np.float32(np.sin(ang)) * y)
    arr *= gain[:, :, None]
    ox, oy = rng.integers(0, _NOISE_SIDE - img.width), rng.integers(0, _NOISE_SIDE - img.height)
    arr += _noise_texture()[oy:oy + img.height, ox:ox + img.width]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
