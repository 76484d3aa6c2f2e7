"""Untrusted uploads -> model input, the way training made its faces; model output -> PNG.

:func:`decode_image` turns the bytes of a JPEG/PNG/WebP/BMP/GIF into a ``(3, R, R)`` float tensor in
``[-1, 1]`` through the same crop, antialiased bicubic resize and scaling as the shards (:mod:`facegen.images`),
after checks ordered so that a hostile file costs almost nothing: byte count, then the pixel count read from
the header, and only then the pixels. With a :class:`facegen.align.Frame` the face is first found and framed
like the training faces; no face found is a 422. Every failure is a :class:`BadImage` with a short ``code``, a one-line
message and the HTTP ``status`` to answer with. Model output goes back with ``facegen.images.encode_png``.

TIFF, AVIF, HEIC, ICO, PSD, SVG and friends are refused (415): no browser sends them for a face photo and
each decoder is more attack surface. ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (Pillow's default):
a truncated upload is an error here, never an image padded with grey.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct
import warnings
from collections.abc import AsyncIterable, Mapping

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from facegen.align import DetectorUnavailable, Frame, NoFace, align_face
from facegen.images import encode_png, from_uint8, preprocess, to_uint8

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")  # Pillow plugin ids; JPEG also opens camera MPO files
ACCEPTED = "JPEG, PNG, WebP, BMP or GIF"
WHITE = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# Served PNGs are encoded once and read once: zlib level 1 costs a 64 px face ~0.28 ms against ~0.46 at level 6,
# for ~13% more bytes: ~0.4 of the ~6 CPU-ms an edit (two PNGs) costs a 2-core box through Serve.
SERVED_PNG_LEVEL = 1

_STATUS = {"too_large": 413, "unsupported_format": 415, "no_face": 422}
# Magic numbers of the formats above (to call a damaged one "truncated") and of image formats we refuse
# (to answer 415 "unsupported" rather than 400 "not an image").
_OURS = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP"}
_REFUSED = {b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"II+\x00": "TIFF", b"MM\x00+": "TIFF", b"8BPS": "PSD",
            b"\x00\x00\x01\x00": "ICO", b"\x00\x00\x02\x00": "CUR", b"icns": "ICNS", b"qoif": "QOI",
            b"\x00\x00\x00\x0cjP  \r\n\x87\n": "JPEG 2000", b"\xffO\xffQ": "JPEG 2000", b"\xff\x0a": "JPEG XL",
            b"\x00\x00\x00\x0cJXL \r\n\x87\n": "JPEG XL", b"DDS ": "DDS", b"%!PS": "EPS"}
_ISO_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC",
               b"mif1": "HEIF", b"msf1": "HEIF"}
_DATA_URL = re.compile(r"data:[\w.+/-]*(?:;[\w.+-]+=[^;,]*)*;base64,", re.IGNORECASE)


class BadImage(ValueError):
    """An upload we refuse: ``code`` (e.g. ``"too_large"``), ``str(exc)`` the message, ``status`` the HTTP
    status (413 too large, 415 unsupported format, 503 when this server cannot align faces, otherwise 400)."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or _STATUS.get(code, 400)

    def to_dict(self) -> dict:
        """The JSON error body: ``{"error": {"code": ..., "message": ...}}``."""
        return {"error": {"code": self.code, "message": self.message}}


def _megabytes(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


def sniff_format(data: bytes) -> str | None:
    """The name of the image format ``data`` starts with, if it is one we know of (accepted or not)."""
    head = data[:64]
    for table in (_OURS, _REFUSED):
        for magic, name in table.items():
            if head.startswith(magic):
                return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _ISO_BRANDS:
        return _ISO_BRANDS[head[8:12]]
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in text:
        return "SVG"
    return None


def open_image(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Parse the header of ``data`` (no pixels decoded yet) after checking its size and format.

    Raises :class:`BadImage`: ``empty``, ``too_large`` (more than ``max_bytes``), ``unsupported_format``,
    ``not_an_image``, ``truncated`` (a header we recognise but cannot parse) or ``too_many_pixels`` (width x
    height over ``max_pixels``, or Pillow's own decompression-bomb limit).
    """
    if not data:
        raise BadImage("empty", "the upload is empty (0 bytes); send a JPEG, PNG, WebP, BMP or GIF photo")
    if len(data) > max_bytes:
        raise BadImage("too_large", f"the image is {_megabytes(len(data))}; the limit is {_megabytes(max_bytes)}")
    try:
        with warnings.catch_warnings():  # Pillow only warns between its limit and twice its limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage("too_many_pixels", f"the image has too many pixels ({exc})") from None
    except UnidentifiedImageError:
        kind = sniff_format(data)
        if kind in FORMATS:
            raise BadImage("truncated", f"the {kind} header is damaged or cut short") from None
        if kind is not None:
            raise BadImage("unsupported_format", f"{kind} images are not supported; send {ACCEPTED}") from None
        raise BadImage("not_an_image", f"the upload is not an image; send {ACCEPTED}") from None
    except (OSError, ValueError, EOFError, SyntaxError, struct.error) as exc:
        kind = sniff_format(data) or "image"
        raise BadImage("truncated", f"the {kind} header is damaged or cut short ({exc})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImage("not_an_image", f"the image is {width}x{height}: it has no pixels")
    if width * height > max_pixels:
        raise BadImage("too_many_pixels", f"the image is {width}x{height} = {width * height / 1e6:.1f} Mpx; "
                                          f"the limit is {max_pixels / 1e6:g} Mpx")
    return image


def load_oriented(image: Image.Image) -> Image.Image:
    """Decode the pixels of the (first frame of the) image, then turn it upright per its EXIF orientation.

    A file that ends early or whose data is corrupt raises :class:`BadImage` ``truncated``.
    """
    try:
        image.load()
    except (OSError, ValueError, EOFError, SyntaxError, struct.error) as exc:  # "image file is truncated", ...
        raise BadImage("truncated", f"the {image.format} image is truncated or corrupt ({exc})") from None
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, struct.error, KeyError, TypeError):
        return image  # garbled EXIF: browsers show such a photo unrotated, so do we


def _gray16_to_l(image: Image.Image) -> Image.Image:
    """16-bit (``I;16*``, or ``I`` from a 16-bit PNG) -> 8-bit ``L``, scaled: Pillow's ``convert("L")``
    clips (a value of 256 of 65535 would come out white)."""
    values = np.asarray(image).astype(np.float64)
    return Image.fromarray(np.rint(values.clip(0, 65535) / 257).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any loaded PIL image -> ``RGB``: transparency composited on white, 16-bit gray scaled to 8 bits,
    float (``F``) taken as 0..255 like Pillow, palettes and CMYK converted. Unknown modes: BadImage ``bad_mode``."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        image, mode = _gray16_to_l(image), "L"
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        image, mode = Image.fromarray(np.rint(np.nan_to_num(values).clip(0, 255)).astype(np.uint8), "L"), "L"
    try:
        if mode in _ALPHA_MODES or "transparency" in image.info:  # + PNG tRNS chunk, GIF transparent index
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")
        return image if mode == "RGB" else image.convert("RGB")
    except ValueError as exc:  # a mode Pillow cannot convert to RGB
        raise BadImage("bad_mode", f"cannot convert a {mode} image to RGB ({exc})") from None


def _normalise_crop(crop) -> tuple:
    """``None`` -> ``("full",)``; a manifest's JSON list (``["center", 140]``) -> a tuple."""
    crop = ("full",) if crop is None else tuple(crop)
    if not crop or crop[0] not in ("full", "center") or (crop[0] == "center" and len(crop) != 2):
        raise ValueError(f"crop must be ('full',) or ('center', side), got {crop!r}")
    return crop


def decode_image(data: bytes, resolution: int, crop=None, *, max_bytes: int = MAX_BYTES,
                 max_pixels: int = MAX_PIXELS, frame: Frame | None = None) -> torch.Tensor:
    """Upload bytes -> ``(3, resolution, resolution)`` float32 in [-1, 1], preprocessed like training.

    With a ``frame`` the face is found and framed like the training faces (:func:`facegen.align.align_face`);
    a photo without a detectable face is BadImage ``no_face`` (422). Without one, ``crop`` is the dataset's
    crop (``manifest.params["crop"]``, see ``facegen.images.crop_box``): ``None`` or ``("full",)`` takes the
    largest centred square; ``("center", side)`` cuts a fixed ``side``-pixel square, which only makes sense
    for images in the dataset's own layout (178x218 aligned CelebA). Raises :class:`BadImage`.
    """
    crop = _normalise_crop(crop)
    image = open_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    short = min(image.size)
    # Aligning, the face may fill only a quarter of the photo's side: keep 4x more pixels for it.
    keep = (8 if frame is None else 32) * resolution
    if image.format in ("JPEG", "MPO") and crop[0] == "full" and short >= 2 * keep:
        # Let libjpeg decode at 1/2 or 1/4 scale, keeping >= 8x the output side: a 12 Mpx photo then costs
        # ~20x less time for a face within 0.1 grey level of the full decode (1/8 scale, only DC
        # coefficients, was off by ~3 levels).
        scale = keep / short
        image.draft(None, (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
    rgb = to_rgb(load_oriented(image))
    if frame is None:
        return from_uint8(preprocess(rgb, crop, resolution))
    try:
        return from_uint8(align_face(rgb, resolution, frame))
    except NoFace as exc:
        raise BadImage("no_face", f"{exc}: send a photo of one face seen from the front, or set align=false "
                                  "to skip face alignment (the centre square is then used)") from None
    except DetectorUnavailable as exc:  # the server's fault, not the photo's
        raise BadImage("no_face_detector", f"this server cannot align faces ({exc}); set align=false to use the "
                                           "centre square", status=503) from None


def decode_base64_image(text: str, resolution: int, crop=None, *, max_bytes: int = MAX_BYTES,
                        max_pixels: int = MAX_PIXELS, frame: Frame | None = None) -> torch.Tensor:
    """Like :func:`decode_image` for a JSON field: base64 (standard or URL-safe alphabet, padding and line
    breaks optional) with an optional ``data:image/...;base64,`` prefix. Bad base64: BadImage ``bad_base64``."""
    if not isinstance(text, str):
        raise BadImage("bad_base64", f"'image' must be a base64 string, got {type(text).__name__}")
    if len(text) > base64_limit(max_bytes):  # refuse before allocating the decoded copy
        raise BadImage("too_large", f"the image is over {_megabytes(max_bytes)} (base64 text of "
                                    f"{_megabytes(len(text))}); the limit is {_megabytes(max_bytes)}")
    prefix = _DATA_URL.match(text)
    if prefix is None and text[:5].lower() == "data:":
        raise BadImage("bad_base64", "a data: URL must be of the form data:image/...;base64,<data>")
    body = "".join(text[prefix.end() if prefix else 0:].split()).replace("-", "+").replace("_", "/")
    try:
        data = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII characters
        raise BadImage("bad_base64", f"'image' is not valid base64 ({exc})") from None
    return decode_image(data, resolution, crop, max_bytes=max_bytes, max_pixels=max_pixels, frame=frame)


def png_base64(image: torch.Tensor | np.ndarray) -> str:
    """``(3, H, W)`` in [-1, 1] (or ``(H, W, 3)`` uint8) -> base64 text of its PNG (no ``data:`` prefix)."""
    return base64.b64encode(encode_png(image, SERVED_PNG_LEVEL)).decode("ascii")


def png_base64_rows(images: torch.Tensor) -> list[str]:
    """``(k, 3, H, W)`` in [-1, 1] -> k base64 PNGs, the pixels converted once for the batch. Pillow's encoder lets
    go of the GIL: in a worker thread this runs beside the replica's event loop."""
    return [png_base64(pixels) for pixels in to_uint8(images)]


def base64_limit(max_bytes: int = MAX_BYTES) -> int:
    """Longest base64 text (with a data URL prefix and line breaks) that can hold ``max_bytes``; also a
    fair byte cap for a JSON request body carrying one such image plus a few small fields."""
    encoded = 4 * math.ceil(max_bytes / 3)
    return encoded + encoded // 64 + 64 * 1024  # MIME line breaks every 76 chars, prefix, other fields


def check_content_length(headers: Mapping[str, str], max_bytes: int) -> int | None:
    """The declared body size, or None if not declared; BadImage ``too_large`` if over ``max_bytes``,
    ``bad_content_length`` if not a non-negative integer. Cheap: call it before reading anything."""
    declared = headers.get("content-length")
    if declared is None:
        return None
    if not declared.strip().isdigit():
        raise BadImage("bad_content_length", f"Content-Length {declared[:40]!r} is not a byte count")
    if int(declared) > max_bytes:
        raise BadImage("too_large", f"the request body is {_megabytes(int(declared))}; "
                                    f"the limit is {_megabytes(max_bytes)}")
    return int(declared)


async def read_limited(source, max_bytes: int = MAX_BYTES) -> bytes:
    """The whole body of a Starlette ``Request`` (or any async iterable of ``bytes`` chunks), refusing with
    BadImage ``too_large`` as soon as it passes ``max_bytes``: first from the Content-Length header, then
    while streaming (a chunked or lying client cannot make us buffer more than ``max_bytes`` + one chunk)."""
    chunks: AsyncIterable[bytes] = source
    if hasattr(source, "stream") and hasattr(source, "headers"):
        check_content_length(source.headers, max_bytes)
        chunks = source.stream()
    body, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise BadImage("too_large", f"the request body is over the limit of {_megabytes(max_bytes)}")
        body.append(bytes(chunk))
    return b"".join(body)
