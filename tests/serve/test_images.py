"""Upload decoding (serve/images.py): every hostile or odd file gets the right answer, without Ray."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from facegen.images import encode_png, from_uint8, preprocess
from serve.images import (MAX_BYTES, BadImage, base64_limit, check_content_length, decode_base64_image,
                          decode_image, png_base64, read_limited, to_rgb)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def save(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def colour_at(tensor: torch.Tensor, row: int, col: int) -> tuple[int, ...]:
    """The 0..255 RGB of one output pixel."""
    return tuple(int(v) for v in ((tensor[:, row, col] + 1) * 127.5).round())


def near(actual, expected, tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


def png_header_only(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header claims width x height, with one tiny IDAT: decoding it would fail as
    truncated, so any other answer proves the size was judged from the header alone."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def refused(data: bytes, **kwargs) -> BadImage:
    with pytest.raises(BadImage) as info:
        decode_image(data, 32, **kwargs)
    return info.value


# ---- bad inputs: code and status ------------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"hello, this is not a picture", bytes(range(256)) * 4, b"%PDF-1.7\n..."])
def test_not_an_image(data):
    err = refused(data)
    assert (err.code, err.status) == ("not_an_image", 400) and "JPEG" in str(err)


def test_empty_upload():
    err = refused(b"")
    assert (err.code, err.status) == ("empty", 400)
    assert err.to_dict() == {"error": {"code": "empty", "message": str(err)}}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
@pytest.mark.parametrize("keep", [0.5, 0.9, 30])
def test_truncated_files_are_refused_not_padded(fmt, keep):
    data = save(noise(64, 64), fmt)
    cut = int(len(data) * keep) if keep < 1 else keep
    assert refused(data[:cut]).code == "truncated"


@pytest.mark.parametrize("fmt, data", [
    ("TIFF", save(noise(8, 8), "TIFF")),
    ("ICO", save(noise(16, 16), "ICO")),
    ("AVIF", save(noise(8, 8), "AVIF")),
    ("PSD", b"8BPS\x00\x01" + b"\x00" * 40),
    ("SVG", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"></svg>'),
    ("SVG", b"\xef\xbb\xbf  <svg viewBox='0 0 1 1'/>"),
])
def test_unsupported_formats_get_415(fmt, data):
    err = refused(data)
    assert (err.code, err.status) == ("unsupported_format", 415) and fmt in str(err)


def test_too_many_bytes_is_413_before_any_parsing():
    assert (refused(b"\0" * (MAX_BYTES + 1)).code, refused(b"\0" * (MAX_BYTES + 1)).status) == ("too_large", 413)
    png = save(noise(32, 32), "PNG")
    assert refused(png, max_bytes=len(png) - 1).code == "too_large"
    assert decode_image(png, 32, max_bytes=len(png)).shape == (3, 32, 32)


@pytest.mark.parametrize("side", [50_000, 7_000])  # over Pillow's bomb limit; over ours (40 Mpx) only
def test_decompression_bomb_is_refused_from_the_header(side):
    bomb = png_header_only(side, side)
    assert len(bomb) < 100
    err = refused(bomb)
    assert (err.code, err.status) == ("too_many_pixels", 400)
    assert refused(png_header_only(64, 64)).code == "truncated"  # the same file at a sane size does get decoded


def test_pixel_limit_is_overridable():
    png = save(Image.new("L", (100, 100)), "PNG")
    assert refused(png, max_pixels=9_999).code == "too_many_pixels"
    assert decode_image(png, 32, max_pixels=10_000).shape == (3, 32, 32)


# ---- modes and formats -----------------------------------------------------------------------------------

def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, *RED] + [0] * 762)
    image.paste(0, (0, 0, 8, 4))  # top half: index 0, the transparent one
    image.info["transparency"] = 0
    return image


def _animated(fmt: str, **params) -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE, BLUE)]
    return save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, **params)


def _gray16(value: int) -> bytes:
    return save(Image.fromarray(np.full((8, 8), value, dtype=np.uint16)), "PNG")


@pytest.mark.parametrize("name, data, top, bottom", [
    ("RGBA opaque red", save(Image.new("RGBA", (8, 8), (*RED, 255)), "PNG"), RED, RED),
    ("RGBA transparent", save(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), WHITE, WHITE),
    ("RGBA half alpha", save(Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "PNG"), (127,) * 3, (127,) * 3),
    ("LA", save(Image.new("LA", (8, 8), (0, 0)), "PNG"), WHITE, WHITE),
    ("L", save(Image.new("L", (8, 8), 200), "PNG"), (200,) * 3, (200,) * 3),
    ("1", save(Image.new("1", (8, 8), 1), "PNG"), WHITE, WHITE),
    ("P + tRNS", save(_palette_with_transparency(), "PNG"), WHITE, RED),
    ("GIF transparent index", save(_palette_with_transparency(), "GIF"), WHITE, RED),
    ("CMYK JPEG", save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95), RED, RED),
    ("16-bit white", _gray16(65535), WHITE, WHITE),
    ("16-bit mid", _gray16(32896), (128,) * 3, (128,) * 3),
    ("16-bit dark, scaled not clipped", _gray16(2570), (10,) * 3, (10,) * 3),
    ("animated GIF: first frame", _animated("GIF"), RED, RED),
    ("animated WebP: first frame", _animated("WEBP", lossless=True), RED, RED),
    ("animated PNG: first frame", _animated("PNG"), RED, RED),
    ("BMP", save(Image.new("RGB", (8, 8), BLUE), "BMP"), BLUE, BLUE),
    ("MPO (camera JPEG)", _animated("MPO", quality=95), RED, RED),
])
def test_every_mode_decodes_to_sensible_rgb(name, data, top, bottom):
    out = decode_image(data, 16)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert near(colour_at(out, 2, 8), top, tol=3 if "JPEG" not in name and "MPO" not in name else 12), name
    assert near(colour_at(out, 13, 8), bottom, tol=3 if "JPEG" not in name and "MPO" not in name else 12), name


def test_float_and_16bit_images_are_scaled_not_clipped():
    grey = Image.fromarray(np.full((4, 4), 100.4, dtype=np.float32))
    assert to_rgb(grey).getpixel((0, 0)) == (100, 100, 100)
    as_int = Image.fromarray(np.full((4, 4), 65535, dtype=np.int32))  # "I": what older Pillow gave for 16-bit
    assert as_int.mode == "I" and to_rgb(as_int).getpixel((0, 0)) == WHITE


@pytest.mark.parametrize("orientation, top, bottom", [(1, None, None), (6, RED, BLUE), (8, BLUE, RED)])
def test_exif_orientation_is_applied(orientation, top, bottom):
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))  # as stored: left half red; rotated 90 degrees it is top or bottom
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode_image(save(stored, "JPEG", exif=exif.tobytes(), quality=95), 8)
    if orientation == 1:  # upright landscape: centre square, red on the left
        assert near(colour_at(out, 4, 1), RED) and near(colour_at(out, 4, 6), BLUE)
    else:
        assert near(colour_at(out, 1, 4), top) and near(colour_at(out, 6, 4), bottom)


@pytest.mark.parametrize("size, crop", [((178, 218), ("center", 140)), ((178, 218), ["center", 140]),
                                        ((60, 30), ("full",)), ((30, 61), None)])
def test_non_square_images_are_cropped_and_resized_like_training(size, crop):
    image = noise(*size)
    expected = from_uint8(preprocess(image, tuple(crop or ("full",)), 32))
    assert torch.equal(decode_image(save(image, "PNG"), 32, crop), expected)


def test_centre_crop_keeps_the_middle():
    image = Image.new("RGB", (178, 218), BLUE)
    image.paste(RED, (19, 39, 159, 179))  # CelebA's 140 px face square
    out = decode_image(save(image, "PNG"), 16, ("center", 140))
    # (the antialiasing filter of the edge pixels reaches outside the box, in training too)
    assert near(colour_at(out, 2, 2), RED, tol=1) and near(colour_at(out, 13, 13), RED, tol=1)
    assert near(colour_at(decode_image(save(image, "PNG"), 16), 0, 8), BLUE, tol=1)  # full crop: more


def test_big_jpeg_is_decoded_at_reduced_scale_with_the_same_result():
    image = noise(16, 12).resize((1600, 1200), Image.Resampling.BICUBIC)  # smooth, like a photo
    data = save(image, "JPEG", quality=95)
    full = from_uint8(preprocess(Image.open(io.BytesIO(data)), ("full",), 32))
    assert (decode_image(data, 32) - full).abs().mean() < 0.004  # half a grey level


def test_bad_crop_is_a_programming_error():
    with pytest.raises(ValueError, match="crop"):
        decode_image(save(noise(8, 8), "PNG"), 8, ("middle",))


# ---- base64 and PNG out ----------------------------------------------------------------------------------

def test_png_round_trip_is_exact():
    original = decode_image(save(noise(32, 32), "PNG"), 32)
    png = encode_png(original)
    assert png.startswith(b"\x89PNG") and torch.equal(decode_image(png, 32), original)
    assert torch.equal(decode_base64_image(png_base64(original), 32), original)
    assert encode_png(torch.full((3, 4, 4), 7.0)) == encode_png(torch.ones(3, 4, 4))  # clamped
    with pytest.raises(ValueError, match="3, H, W"):
        encode_png(torch.zeros(1, 3, 4, 4))


def test_base64_variants():
    data = save(noise(16, 16), "PNG")
    expected = decode_image(data, 16)
    text = base64.b64encode(data).decode()
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    for variant in (text, "data:image/png;base64," + text, "DATA:image/png;charset=x;base64," + wrapped,
                    base64.urlsafe_b64encode(data).decode().rstrip("=")):
        assert torch.equal(decode_base64_image(variant, 16), expected)


@pytest.mark.parametrize("text, code", [
    ("not base64 at all!", "bad_base64"), ("data:image/png,rawbytes", "bad_base64"), ("abcdé", "bad_base64"),
    (12345, "bad_base64"), ("", "empty"), (base64.b64encode(b"plain text").decode(), "not_an_image"),
])
def test_bad_base64(text, code):
    with pytest.raises(BadImage) as info:
        decode_base64_image(text, 16)
    assert info.value.code == code


def test_base64_too_long_is_refused_before_decoding():
    with pytest.raises(BadImage) as info:
        decode_base64_image("A" * (base64_limit(1000) + 1), 16, max_bytes=1000)
    assert info.value.code == "too_large" and info.value.status == 413


# ---- capped body reads -----------------------------------------------------------------------------------

def test_read_limited_stops_at_the_cap():
    consumed = []

    async def chunks():
        for i in range(100):
            consumed.append(i)
            yield b"x" * 1000

    assert asyncio.run(read_limited(chunks(), 100_000)) == b"x" * 100_000
    consumed.clear()
    with pytest.raises(BadImage) as info:
        asyncio.run(read_limited(chunks(), 10_500))
    assert info.value.code == "too_large" and len(consumed) == 11


def test_content_length_header():
    assert check_content_length({}, 10) is None
    assert check_content_length({"content-length": "10"}, 10) == 10
    for value, code in (("11", "too_large"), ("-1", "bad_content_length"), ("ten", "bad_content_length")):
        with pytest.raises(BadImage) as info:
            check_content_length({"content-length": value}, 10)
        assert info.value.code == code


def test_read_limited_on_a_real_starlette_request():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def upload(request):
        try:
            body = await read_limited(request, 1000)
        except BadImage as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        return JSONResponse({"bytes": len(body)})

    client = TestClient(Starlette(routes=[Route("/upload", upload, methods=["POST"])]))
    assert client.post("/upload", content=b"a" * 1000).json() == {"bytes": 1000}
    declared = client.post("/upload", content=b"a" * 1001)  # refused from Content-Length
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"
    chunked = client.post("/upload", content=iter([b"a" * 600, b"a" * 600]))  # no Content-Length
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "too_large"
