"""The images of a dataset, decoded, cropped, resized and encoded as a shard stores them (raw pixels or PNG,
``image_format``) for the shard writer.

One bad file must not sink a dataset of 200,000: an image that cannot be decoded (truncated, not a JPEG/PNG,
a decompression bomb) comes back as a :class:`Skipped` naming it, and the writer decides whether to drop it
(the default) or abort (``--strict``). A *missing* file is never skipped: the readers already checked every
image exists, so one vanishing mid-run means the source itself is changing, and that stays an error.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import pyarrow.fs as pafs

from facegen import align, images, io as fsio
from facegen.data.image_format import DEFAULT_IMAGE_FORMAT, encode_face
from facegen.errors import DatasetError


@dataclass(frozen=True)
class Skipped:
    """An image that could not be decoded: its location (URI) and why, as the manifest lists it."""

    path: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.path}: cannot decode image ({self.reason})"


def encode_image(fs: pafs.FileSystem, crop: tuple, resolution: int, path: str, data: bytes | None = None, *,
                 image_format: str = DEFAULT_IMAGE_FORMAT) -> bytes | Skipped:
    """The face at ``path`` (read unless ``data`` already holds the file's bytes) as ``image_format`` stores it,
    or a :class:`Skipped` when the file is not a decodable JPEG/PNG. Raises :class:`DatasetError` if it is
    missing."""
    try:
        data = fsio.read_bytes(fs, path) if data is None else data
        # ("align",): a raw photo, its face found and framed like CelebA's aligned crops (no face: NoFace,
        # a ValueError, so the photo is skipped like an undecodable one).
        face = (align.align_face(images.open_rgb(data, images.SOURCE_FORMATS), resolution)
                if crop[0] == align.ALIGN_CROP[0] else images.decode_face(data, crop, resolution))
    except FileNotFoundError:
        raise DatasetError(f"{fsio.to_uri(fs, path)}: image is missing") from None
    except images.DECODE_ERRORS as exc:  # truncated, not an image, too many pixels
        return Skipped(fsio.to_uri(fs, path), " ".join(str(exc).split()) or type(exc).__name__)
    return encode_face(face, image_format)


def encode_images(fs: pafs.FileSystem, crop: tuple, resolution: int, paths: list[str], workers: int,
                  blobs: list[bytes] | None = None, image_format: str = DEFAULT_IMAGE_FORMAT
                  ) -> Iterator[bytes | Skipped]:
    """:func:`encode_image` of each path (or of each of ``blobs``, the in-memory images at those paths), in
    order; ``workers > 1`` spreads decoding over a process pool.

    Spawned (not forked) workers: forking after pyarrow's S3 client has started can deadlock it.
    """
    encode = partial(encode_image, fs, crop, resolution, image_format=image_format)
    columns = (paths,) if blobs is None else (paths, blobs)
    if workers <= 1:
        yield from map(encode, *columns)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(encode, *columns, chunksize=64)
    finally:  # on an error (or an abort by the caller), don't decode the rest of the dataset first
        pool.shutdown(cancel_futures=True)
