"""The image convention, in one place: how a face is cut from a photo and how its pixels become model input.

* **Faces**: :func:`preprocess` cuts the training square out of any photo (:func:`crop_box`) and resizes it
  with an antialiased bicubic filter; prepared shards, augmentation and the editing service all use it, so a
  model sees the same kind of face everywhere.
* **Pixels**: models take float images in [-1, 1], ``x / 127.5 - 1`` of the 8-bit values
  (:func:`from_uint8`); their outputs go back with :func:`to_uint8`: clamped to [-1, 1], ``(x + 1) * 127.5``
  rounded to the nearest integer (ties to even, ``torch.round``), so 8-bit pixels survive a round trip exactly.
* **Files**: PNG is the lossless store of a face (:func:`encode_png`, :func:`decode_png`); Pillow is only ever
  asked to parse the formats named (:data:`SOURCE_FORMATS` for dataset images), never whatever it could guess.
  Training shards may instead hold the bare pixels (:func:`encode_raw`, :func:`decode_raw`): no decode at all.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

SOURCE_FORMATS = ("JPEG", "PNG")  # Pillow plugin ids a dataset's image files may be in
# What a truncated file, a non-image or a decompression bomb raises when opened, decoded or resized.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` (or one ``(3, H, W)``) float in [-1, 1] (clamped) -> ``(N, H, W, 3)`` (or ``(H, W, 3)``)
    uint8, C-contiguous: ``round((x + 1) * 127.5)``."""
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    return np.ascontiguousarray(pixels.movedim(-3, -1).numpy())


def from_uint8(pixels: np.ndarray | Image.Image) -> torch.Tensor:
    """``(N, H, W, 3)`` (or ``(H, W, 3)``, or an RGB PIL image) uint8 -> ``(N, 3, H, W)`` (or ``(3, H, W)``)
    float32 in [-1, 1]: ``x / 127.5 - 1``. The result is a channels-last view; ``pixels`` is never written."""
    return uint8_to_float(uint8_tensor(pixels))


def uint8_tensor(pixels: np.ndarray | Image.Image) -> torch.Tensor:
    """``(N, H, W, 3)`` (or ``(H, W, 3)``, or an RGB PIL image) uint8 -> ``(N, 3, H, W)`` (or ``(3, H, W)``)
    uint8, a channels-last view: a quarter of the float bytes, for a batch that crosses to a GPU as pixels."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    if not (array.flags.c_contiguous and array.flags.writeable):  # torch wants a buffer it may write
        array = np.array(array, order="C")
    return torch.from_numpy(array).movedim(-1, -3)


def uint8_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape, any device) -> float32 in [-1, 1] on the same device: ``x / 127.5 - 1``."""
    return pixels.float().div_(127.5).sub_(1.0)


def to_pil(image: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` in [-1, 1] -> an RGB PIL image (see :func:`to_uint8`)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    return Image.fromarray(to_uint8(image))


def encode_png(image: torch.Tensor | np.ndarray | Image.Image, compress_level: int = 6) -> bytes:
    """PNG file bytes of a ``(3, H, W)`` tensor in [-1, 1] (see :func:`to_uint8`), a uint8 array (``(H, W, 3)``
    RGB or ``(H, W)`` gray) or a PIL image. ``compress_level``: zlib's 0-9 (6 is Pillow's default; 1 encodes a
    64 px face in ~60% of the time for ~13% more bytes)."""
    if isinstance(image, torch.Tensor):
        image = to_pil(image)
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def open_rgb(data: bytes, formats: tuple[str, ...] = ("PNG",)) -> Image.Image:
    """Image file bytes in one of ``formats`` (Pillow plugin ids) -> a decoded RGB PIL image.
    Raises one of :data:`DECODE_ERRORS` for anything else, a truncated file included."""
    with Image.open(io.BytesIO(data), formats=list(formats)) as image:
        return image.convert("RGB")


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> ``(H, W, 3)`` uint8 (gray or palette PNGs are converted to RGB); see :func:`open_rgb`."""
    return np.asarray(open_rgb(data))


def encode_raw(image: torch.Tensor | np.ndarray | Image.Image) -> bytes:
    """The bare pixels of a face: ``H * W * 3`` bytes, row-major RGB, of a ``(3, H, W)`` tensor in [-1, 1] (see
    :func:`to_uint8`), an RGB PIL image or an ``(H, W, 3)`` uint8 array."""
    if isinstance(image, torch.Tensor):
        image = to_uint8(image)
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}")
    return np.ascontiguousarray(pixels).tobytes()


def decode_raw(data, resolution: int) -> np.ndarray:
    """:func:`encode_raw` bytes of one or more ``resolution`` squares back to back (any buffer: bytes, a pyarrow
    Buffer) -> ``(N, R, R, 3)`` uint8, a read-only view of ``data`` (no copy). Raises ``ValueError`` unless the
    length is a non-zero multiple of ``R * R * 3``: a blob of another size is not a face of this resolution."""
    view = memoryview(data)
    size = resolution * resolution * 3
    if not view.nbytes or view.nbytes % size:
        raise ValueError(f"{view.nbytes} bytes are not whole {resolution}x{resolution} RGB images ({size} bytes)")
    return np.frombuffer(view, dtype=np.uint8).reshape(-1, resolution, resolution, 3)


def crop_box(width: int, height: int, crop: tuple) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the training square in a ``width`` x ``height`` image.

    ``("center", side)``: a centred ``side`` square (178x218 CelebA, 140 -> (19, 39, 159, 179)), shrunk to
    fit smaller images; ``("full",)``: the largest centred square.
    """
    side = min(width, height) if crop[0] == "full" else min(int(crop[1]), width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def preprocess(image: Image.Image, crop: tuple, resolution: int) -> Image.Image:
    """Any PIL image -> RGB ``resolution`` x ``resolution``: crop per ``crop`` then antialiased bicubic."""
    rgb = image.convert("RGB")
    return rgb.resize((resolution, resolution), Image.Resampling.BICUBIC, box=crop_box(*rgb.size, crop))


def decode_face(data: bytes, crop: tuple, resolution: int, formats: tuple[str, ...] = SOURCE_FORMATS
                ) -> Image.Image:
    """Image file bytes (one of ``formats``) -> the training face: :func:`preprocess` of the decoded image.
    Raises one of :data:`DECODE_ERRORS` if the bytes are not such an image."""
    with Image.open(io.BytesIO(data), formats=list(formats)) as image:
        return preprocess(image, crop, resolution)
