"""Procedural face drawing for the synthetic dataset (factor sampling and layouts live in ``synth.py``).

``render_face`` draws a ``synth.Face`` with PIL at ``SUPERSAMPLE`` times the output size and reduces it,
which antialiases the edges for the price of one box filter. Geometry is in "face units": the face square
(the region that must hold head, hair and hat) has side 1 and ``_Pen`` maps it to canvas pixels. Random
choices that are not labelled factors (colours of clothes, hat, frames, background) come from the image's
own generator, so one image's bytes depend only on (seed, index).
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:  # synth imports this module at runtime; Face is only needed for annotations
    from facegen.data.synth import Face

SUPERSAMPLE = 2
BEARD_NONE, BEARD_GOATEE, BEARD_FULL = 0, 1, 2  # values of Face.beard
HAIR_COLORS: tuple[str, ...] = ("black", "blond", "brown", "gray")  # Face.hair_color indexes this
_HAIR_RGB = np.array([(30, 24, 22), (226, 192, 112), (112, 70, 38), (178, 176, 174)], dtype=np.float32)
_SKIN_ANCHORS = ((58, 196, 255), (36, 142, 234), (24, 104, 224))  # R, G, B at tone 0, 0.5, 1
# Per-race skin tint (FAIRFACE_RACES order), so neighbouring tone bands also differ in hue.
_RACE_TINT = np.array([(0, 0, 4), (0, 0, 0), (12, -2, -10), (8, 8, -18), (10, 2, -6), (4, -6, -2),
                       (8, 2, 0)], dtype=np.float32)
# Age bin (FAIRFACE_AGES order) -> head size, eye size, how far (in head heights) features sit lower.
_AGE_HEAD = (0.78, 0.86, 0.94, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
_AGE_EYE = (1.5, 1.3, 1.12, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
_AGE_DROP = (0.16, 0.09, 0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_MOUTH_DARK, _TEETH = (50, 16, 18), (238, 236, 226)
_NOISE_SIDE = 512  # side of the shared noise field, larger than any canvas so a window always fits


def _rgb(c) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(c), 0, 255))


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float], h: float | None = None):
    r, g, b = colorsys.hsv_to_rgb(rng.random() if h is None else h, rng.uniform(*s), rng.uniform(*v))
    return int(r * 255), int(g * 255), int(b * 255)


class _Pen:
    """ImageDraw in face units: points in [0, 1] over the face square, ellipses by centre and radii."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[int, int, int], k: int):
        self.d, self.ox, self.oy, self.side = draw, box[0] * k, box[1] * k, box[2] * k

    def p(self, pts):
        return [(self.ox + x * self.side, self.oy + y * self.side) for x, y in pts]

    def _bb(self, cx, cy, rx, ry):
        return self.p([(cx - rx, cy - ry), (cx + rx, cy + ry)])

    def wid(self, w: float) -> int:
        return max(1, round(w * self.side))

    def ellipse(self, cx, cy, rx, ry, fill=None, outline=None, width=0.0):
        self.d.ellipse(self._bb(cx, cy, rx, ry), fill, outline, self.wid(width) if outline else 0)

    def polygon(self, pts, fill):
        self.d.polygon(self.p(pts), fill=fill)

    def line(self, pts, fill, width):
        self.d.line(self.p(pts), fill=fill, width=self.wid(width), joint="curve")

    def chord(self, cx, cy, rx, ry, start, end, fill):
        self.d.chord(self._bb(cx, cy, rx, ry), start, end, fill=fill)

    def arc(self, cx, cy, rx, ry, start, end, fill, width):
        self.d.arc(self._bb(cx, cy, rx, ry), start, end, fill=fill, width=self.wid(width))


class _Geom:
    """Where things are on one face, in face units."""

    def __init__(self, f: Face):
        s = f.face_scale * _AGE_HEAD[f.age]
        self.w = 0.235 * s * f.face_shape * (1.06 if f.attrs["Male"] else 0.95)  # head half-width
        self.wl, self.wr = self.w * (1 + 0.1 * f.yaw), self.w * (1 - 0.1 * f.yaw)  # yaw narrows one side
        self.h = 0.29 * s  # head half-height
        self.cx, self.cy = 0.5 + 0.03 * f.yaw, 0.58
        self.dx = 0.2 * self.w * f.yaw  # features shift sideways with yaw
        self.ey = self.cy - 0.1 * self.h + _AGE_DROP[f.age] * self.h  # eye line
        self.eye = _AGE_EYE[f.age]  # eye size multiplier: children have big eyes
        self.my = self.cy + 0.56 * self.h + 0.5 * _AGE_DROP[f.age] * self.h  # mouth line
        self.hairline = self.cy - 0.58 * self.h
        self.hair_top = 0.78 if f.age == 0 else 1.0  # babies have little hair


def _outline(g: _Geom, male: int, grow: float = 1.0, n: int = 48) -> list[tuple[float, float]]:
    """Head outline: a superellipse whose lower half is squarer for men (the jaw) and rounder for women."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    p = np.where(s > 0, 2.7 if male else 1.9, 2.1)
    x, y = np.sign(c) * np.abs(c) ** (2 / p), np.sign(s) * np.abs(s) ** (2 / p)
    half = np.where(c < 0, g.wl, g.wr) * grow
    return list(zip((g.cx + half * x).tolist(), (g.cy + g.h * grow * y).tolist()))


def render_face(f: Face, rng: np.random.Generator, size: tuple[int, int],
                box: tuple[int, int, int]) -> Image.Image:
    """Draw ``f`` on a ``size`` (width, height) canvas with the face square at ``box`` = (left, top, side)."""
    # Nuisance draws come first and always in the same order, so flipping one attribute changes only the
    # pixels of that attribute (and not, say, the noise window).
    background = _hsv(rng, (0.15, 0.5), (0.5, 0.9), h=f.background_hue)
    clothes, hat = _hsv(rng, (0.3, 0.8), (0.2, 0.8)), _hsv(rng, (0.5, 0.9), (0.3, 0.85))
    # Dark frames on light skin, light (metal) frames on dark skin: a rim must contrast to be seen at 64 px.
    frame = _hsv(rng, (0.0, 0.5), (0.05, 0.25) if f.skin_tone > 0.45 else (0.75, 0.95))
    noise_at = (rng.random(), rng.random())

    img = Image.new("RGB", (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE), background)
    pen, g, a = _Pen(ImageDraw.Draw(img), box, SUPERSAMPLE), _Geom(f), f.attrs
    skin = np.array([np.interp(f.skin_tone, (0, 0.5, 1), ch) for ch in _SKIN_ANCHORS]) + _RACE_TINT[f.race]
    hair = _HAIR_RGB[f.hair_color]
    long_hair = not a["Bald"] and not a["Male"] and f.age >= 1
    sides = ((-1, g.wl), (1, g.wr))

    pen.polygon([(g.cx - 0.4 * g.w, g.cy + 0.6 * g.h), (g.cx + 0.4 * g.w, g.cy + 0.6 * g.h),
                 (g.cx + 0.45 * g.w, 1.3), (g.cx - 0.45 * g.w, 1.3)], _rgb(skin * 0.8))  # neck
    pen.ellipse(g.cx, g.cy + g.h + 0.32, 2.2 * g.w, 0.3, fill=clothes)
    if not a["Bald"]:
        _back_hair(pen, g, _rgb(hair), long_hair, f.curly)
    for side, half in sides if not long_hair else ():  # ears, half behind the head
        pen.ellipse(g.cx + side * (half + 0.01) - g.dx * 0.3, g.ey + 0.05 * g.h, 0.04, 0.24 * g.h,
                    fill=_rgb(skin * 0.92))
    pen.polygon(_outline(g, a["Male"]), _rgb(skin))
    if a["5_o_Clock_Shadow"]:
        pen.polygon(_beard_shape(g), _rgb(skin * 0.72 + np.array([8, 12, 22])))
    for side in (-1, 1) if a["Rosy_Cheeks"] else ():
        pen.ellipse(g.cx + side * 0.55 * g.w + g.dx, g.cy + 0.22 * g.h, 0.18 * g.w, 0.14 * g.w,
                    fill=_rgb(skin * 0.3 + np.array([235, 60, 90]) * 0.7))
    # Wrinkles are darker creases on light skin and lighter ones on dark skin, so they show on both.
    crease = skin * (0.74 - 0.04 * f.age) if skin.mean() > 100 else skin * 0.5 + 80 + 4 * f.age
    _wrinkles(pen, g, _rgb(crease), f.age)
    if not a["Bald"]:
        _front_hair(pen, g, _rgb(hair), a["Bangs"])
    _eyes(pen, g, _rgb(hair * 0.7), a["Narrow_Eyes"])
    for side, half in sides if a["Sideburns"] else ():
        x0, y1 = g.cx + side * half * 0.97, g.cy + 0.3 * g.h
        pen.polygon([(x0, g.hairline), (x0, y1), (x0 - side * 0.13 * g.w, y1),
                     (x0 - side * 0.16 * g.w, g.hairline)], _rgb(hair * 0.85))
    _facial_hair(pen, g, _rgb(hair * 0.85), f.beard, a["Mustache"])
    _mouth(pen, g, skin, a, f.age)
    if a["Wearing_Hat"]:  # a crown over the top of the head and a brim at the hairline
        brim = g.hairline - 0.1 * g.h
        pen.chord(g.cx, brim, 1.15 * g.w, 0.75 * g.h, 180, 360, hat)
        pen.ellipse(g.cx + g.dx * 0.5, brim, 1.45 * g.w, 0.1 * g.h, fill=_rgb(np.array(hat) * 0.7))
    if a["Eyeglasses"]:
        _glasses(pen, g, frame)
    return _finish(img.reduce(SUPERSAMPLE), f, noise_at)


def _back_hair(pen: _Pen, g: _Geom, c, long_hair: bool, curly: bool) -> None:
    """Hair behind the head: a cap for short hair, plus curtains down to the shoulders for long hair."""
    if long_hair:
        pen.polygon([(g.cx - 1.2 * g.wl, g.cy - 0.2 * g.h), (g.cx + 1.2 * g.wr, g.cy - 0.2 * g.h),
                     (g.cx + 1.3 * g.wr, g.cy + 1.25 * g.h), (g.cx - 1.3 * g.wl, g.cy + 1.25 * g.h)], c)
    ry = 0.95 * g.h * g.hair_top
    pen.ellipse(g.cx, g.cy - 0.2 * g.h, 1.12 * g.w, ry, fill=c)
    for t in np.linspace(np.pi * 1.05, np.pi * 1.95, 9) if curly else ():  # curls: bumps along the cap
        pen.ellipse(g.cx + 1.12 * g.w * np.cos(t), g.cy - 0.2 * g.h + ry * np.sin(t), 0.18 * g.w, 0.18 * g.w,
                    fill=c)


def _front_hair(pen: _Pen, g: _Geom, c, bangs: int) -> None:
    """Hair over the top of the face down to the hairline, and bangs down to the eyebrows."""
    cap_y, ry = g.cy - 0.2 * g.h, 0.95 * g.h * g.hair_top
    phi = np.degrees(np.arcsin(np.clip((g.hairline - cap_y) / ry, -1, 1)))  # chord cut at the hairline
    pen.chord(g.cx, cap_y, 1.12 * g.w, ry, 180 - phi, 360 + phi, c)
    if bangs:
        bottom, top = g.ey - 0.28 * g.w * g.eye, g.hairline - 0.05 * g.h
        xs = np.linspace(g.cx - 0.9 * g.wl, g.cx + 0.9 * g.wr, 7)
        zigzag = [(x + g.dx * 0.5, bottom + (0.05 * g.h if i % 2 else 0.0)) for i, x in enumerate(xs)]
        pen.polygon([(g.cx - 0.95 * g.wl, top), (g.cx + 0.95 * g.wr, top)] + zigzag[::-1], c)


def _eyes(pen: _Pen, g: _Geom, brow, narrow: int) -> None:
    """Eyes (white, iris, lid line), eyebrows and nose; Narrow_Eyes flattens the opening to a slit."""
    ew, eh = 0.19 * g.w * g.eye, 0.1 * g.w * g.eye
    open_h = eh * (0.35 if narrow else 1.0)
    for side in (-1, 1):
        ex = g.cx + side * 0.42 * g.w + g.dx
        pen.ellipse(ex, g.ey, ew, open_h, fill=(242, 240, 236))
        pen.ellipse(ex + g.dx * 0.3, g.ey, 0.55 * ew, min(0.55 * ew, open_h), fill=(52, 34, 24))
        pen.arc(ex, g.ey, ew, open_h, 180, 360, (25, 15, 12), 0.012)
        by = g.ey - eh - 0.1 * g.w
        pen.line([(ex - 1.1 * ew, by), (ex, by - 0.05 * g.w), (ex + 1.1 * ew, by)], brow, 0.018)
    pen.line([(g.cx + 1.3 * g.dx, g.ey + 0.1 * g.h), (g.cx + 1.6 * g.dx + 0.06 * g.w, g.cy + 0.3 * g.h),
              (g.cx + 1.6 * g.dx - 0.04 * g.w, g.cy + 0.33 * g.h)], (90, 60, 50), 0.01)


def _wrinkles(pen: _Pen, g: _Geom, c, age: int) -> None:
    """Age lines: nasolabial folds and eye bags from 30-39 (Young ends at 29), then crow's feet and
    forehead lines; the lines thicken with age."""
    if age < 4:
        return
    wd = 0.011 + 0.002 * (age - 4)
    for side in (-1, 1):
        ex = g.cx + side * 0.42 * g.w + g.dx
        pen.line([(g.cx + g.dx + side * 0.2 * g.w, g.cy + 0.28 * g.h),
                  (g.cx + g.dx + side * 0.42 * g.w, g.my + 0.05 * g.h)], c, wd)
        pen.arc(ex, g.ey + 0.12 * g.w, 0.17 * g.w, 0.1 * g.w, 20, 160, c, wd)
        for dy in (-0.05, 0.05) if age >= 5 else ():
            x0, x1 = ex + side * 0.24 * g.w, ex + side * 0.36 * g.w
            pen.line([(x0, g.ey + dy * g.w), (x1, g.ey + 2.4 * dy * g.w)], c, wd)
    for i in range(min(3, age - 4)):  # forehead lines (hidden under bangs or a hat brim)
        y = g.ey - 0.22 * g.h - 0.1 * g.h * i
        pen.line([(g.cx - 0.45 * g.w + g.dx, y), (g.cx + 0.45 * g.w + g.dx, y)], c, wd)


def _beard_shape(g: _Geom) -> list[tuple[float, float]]:
    """Lower face from cheek to chin, closed by a line under the nose (beards and stubble; men only)."""
    lower = [(x, y) for x, y in _outline(g, male=1, grow=1.04) if y > g.cy + 0.05 * g.h]
    y = g.cy + 0.4 * g.h
    return lower + [(g.cx - 0.55 * g.w + g.dx, y), (g.cx + 0.55 * g.w + g.dx, y)]


def _facial_hair(pen: _Pen, g: _Geom, c, beard: int, mustache: int) -> None:
    """Full beard over the lower face, or a goatee patch on the chin; a mustache bar over the lip."""
    mx = g.cx + g.dx
    if beard == BEARD_FULL:
        pen.polygon(_beard_shape(g), c)
    elif beard == BEARD_GOATEE:
        pen.ellipse(mx, g.my + 0.25 * g.h, 0.3 * g.w, 0.24 * g.h, fill=c)
    if mustache:
        pen.polygon([(mx - 0.46 * g.w, g.my + 0.02 * g.h), (mx - 0.3 * g.w, g.my - 0.18 * g.h),
                     (mx + 0.3 * g.w, g.my - 0.18 * g.h), (mx + 0.46 * g.w, g.my + 0.02 * g.h),
                     (mx, g.my - 0.06 * g.h)], c)


def _mouth(pen: _Pen, g: _Geom, skin, a: dict[str, int], age: int) -> None:
    """Smiling curves the mouth up and widens it; Mouth_Slightly_Open shows a dark opening with teeth."""
    lips = (196, 28, 52) if a["Wearing_Lipstick"] else _rgb(skin * 0.45 + np.array([110, 28, 40]))
    seam = _rgb(np.array(lips) * 0.45)  # the dark line between the lips shows the mouth's shape on any skin
    mx, my = g.cx + g.dx, g.my
    mw = g.w * (0.5 if a["Smiling"] else 0.34) * (0.8 if age < 2 else 1.0)
    lip_w = 0.035 * g.w * (1.5 if a["Wearing_Lipstick"] else 1.0)
    if a["Smiling"] and a["Mouth_Slightly_Open"]:  # a D-shaped open smile showing the upper teeth
        for rx, ry, c in ((mw, 0.2, lips), (mw * 0.88, 0.16, _MOUTH_DARK), (mw * 0.8, 0.07, _TEETH)):
            pen.chord(mx, my - 0.04 * g.h, rx, ry * g.h, 0, 180, c)
    elif a["Smiling"]:  # a thick upturned arc, seam along its inner edge, creases at the corners
        ry, t = 0.2 * g.h, 0.11 * g.h
        pen.arc(mx, my - 0.12 * g.h, mw, ry, 10, 170, lips, t)
        pen.arc(mx, my - 0.12 * g.h, mw - t, ry - t, 10, 170, seam, 0.014)
        for side in (-1, 1):
            corner = mx + side * mw
            pen.line([(corner, my - 0.1 * g.h), (corner + side * 0.08 * g.w, my - 0.2 * g.h)], seam, 0.012)
    elif a["Mouth_Slightly_Open"]:
        pen.ellipse(mx, my, mw * 0.8, 0.1 * g.h, fill=_MOUTH_DARK, outline=lips, width=lip_w * 1.6)
        pen.chord(mx, my - 0.02 * g.h, mw * 0.6, 0.06 * g.h, 180, 360, _TEETH)
    else:
        pen.ellipse(mx, my, mw, lip_w * 1.6, fill=lips)
        pen.line([(mx - mw, my), (mx + mw, my)], seam, 0.01)


def _glasses(pen: _Pen, g: _Geom, frame) -> None:
    """Two rims around the eyes, a bridge, and temples towards the ears."""
    rx, ry = 0.3 * g.w * g.eye, 0.2 * g.w * g.eye
    for side, half in ((-1, g.wl), (1, g.wr)):
        ex = g.cx + side * 0.42 * g.w + g.dx
        pen.ellipse(ex, g.ey, rx, ry, outline=frame, width=0.02)
        pen.line([(ex + side * rx, g.ey - 0.3 * ry), (g.cx + side * half, g.ey - 0.4 * ry)], frame, 0.016)
    mx, y = g.cx + g.dx, g.ey - 0.2 * ry
    pen.line([(mx - 0.42 * g.w + rx, y), (mx + 0.42 * g.w - rx, y)], frame, 0.016)  # bridge


@lru_cache(maxsize=8)
def _ramps(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical coordinate ramps in [-1, 1], cached per image size."""
    return (np.linspace(-1, 1, width, dtype=np.float32)[None, :],
            np.linspace(-1, 1, height, dtype=np.float32)[:, None])


@lru_cache(maxsize=1)
def _noise_texture() -> np.ndarray:
    """A fixed field of gaussian noise (sigma 3) that images take windows of.

    Fresh per-pixel noise cost more than drawing the face; a window at a per-image random offset varies
    enough for our purpose and still depends only on the image's generator.
    """
    return np.random.default_rng(20240601).normal(0.0, 3.0, (_NOISE_SIDE, _NOISE_SIDE, 3)).astype(np.float32)


def _finish(img: Image.Image, f: Face, noise_at: tuple[float, float]) -> Image.Image:
    """Directional lighting (a brightness gradient) and a little gaussian noise from window ``noise_at``."""
    arr = np.asarray(img, dtype=np.float32)
    x, y = _ramps(img.width, img.height)
    ang = 2 * np.pi * f.lighting_angle
    arr *= (1.0 + f.lighting * (np.float32(np.cos(ang)) * x + np.float32(np.sin(ang)) * y))[:, :, None]
    ox, oy = int(noise_at[0] * (_NOISE_SIDE - img.width)), int(noise_at[1] * (_NOISE_SIDE - img.height))
    arr += _noise_texture()[oy:oy + img.height, ox:ox + img.width]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
