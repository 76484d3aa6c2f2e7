"""How a shard row stores its face, and reading it back: ``raw`` pixels or a ``png`` file.

* ``raw`` (the default for new shards): the ``R * R * 3`` bytes of the RGB face, row-major, in a fixed-size
  binary column (:func:`column_type`). Reading a batch is a view of the Parquet column's buffer reshaped to
  ``(N, R, R, 3)``: no image decoding at all, so ingest costs a Parquet read. 1.8x the bytes of PNG on
  disk for the demo's smooth synthetic faces (30 vs 17 MB at 64 px, Parquet's default Snappy compression).
* ``png``: a lossless PNG per row (the only format before ``image_format`` existed: a manifest without the
  field is ``png``). Smaller, but every epoch decodes every image again.

Both hold exactly the same pixels (``facegen.images.preprocess`` of the source), and every reader takes
either through :func:`decode_column`, so shard folders written before raw existed keep working.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from facegen import images
from facegen.errors import FacegenError

IMAGE_FORMATS = ("raw", "png")
DEFAULT_IMAGE_FORMAT = "raw"
LEGACY_IMAGE_FORMAT = "png"  # what a manifest written before the field existed holds


def check_image_format(name: str) -> str:
    """``name`` if it is one of :data:`IMAGE_FORMATS`; else a :class:`FacegenError` listing them."""
    if name not in IMAGE_FORMATS:
        raise FacegenError(f"image format {name!r}: expected one of {', '.join(IMAGE_FORMATS)}")
    return name


def column_type(image_format: str, resolution: int) -> pa.DataType:
    """The Arrow type of the ``image`` column: fixed-size binary of one face for raw, variable binary for PNG."""
    return pa.binary(resolution * resolution * 3) if check_image_format(image_format) == "raw" else pa.binary()


def encode_face(face, image_format: str) -> bytes:
    """A face (RGB PIL image, ``(H, W, 3)`` uint8 array or ``(3, H, W)`` tensor) as a shard stores it."""
    return images.encode_raw(face) if check_image_format(image_format) == "raw" else images.encode_png(face)


def decode_face(blob: bytes, image_format: str, resolution: int) -> np.ndarray:
    """One stored face -> ``(R, R, 3)`` uint8. Raises (``ValueError``, ``OSError``, ``TypeError`` for a null)
    when ``blob`` is not an R x R RGB face in that format: a wrong-size raw blob, a corrupt or wrong-size PNG."""
    if image_format == "raw":
        if len(blob) != resolution * resolution * 3:  # two faces' worth would pass decode_raw
            raise ValueError(f"raw image of {len(blob)} bytes, expected {resolution * resolution * 3}")
        return images.decode_raw(blob, resolution)[0]
    pixels = images.decode_png(blob)
    if pixels.shape != (resolution, resolution, 3):
        raise ValueError(f"image is {pixels.shape}, expected {(resolution, resolution, 3)}")
    return pixels


def decode_column(column: pa.Array | pa.ChunkedArray, image_format: str, resolution: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A batch's ``image`` column -> images ``(N, R, R, 3)`` uint8 and ok ``(N,)`` bool.

    A row that is not a face of this size and format (truncated, wrong size, not a PNG, null) has ``ok=False``
    and a black image, so it is counted and dropped downstream instead of failing the batch. Raw shards as
    written (fixed-size column of this resolution, no nulls) take the fast path: one view, no per-row work.
    """
    check_image_format(image_format)
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n, size = len(array), resolution * resolution * 3
    if (image_format == "raw" and n and pa.types.is_fixed_size_binary(array.type)
            and array.type.byte_width == size and array.null_count == 0):
        data = array.buffers()[1].slice(array.offset * size, n * size)
        return images.decode_raw(data, resolution), np.ones(n, dtype=bool)
    out = np.zeros((n, resolution, resolution, 3), dtype=np.uint8)
    ok = np.ones(n, dtype=bool)
    for i, blob in enumerate(array.to_pylist()):
        try:
            out[i] = decode_face(blob, image_format, resolution)
        except Exception:  # any undecodable row (truncated bytes, wrong size, not a PNG, null) is corrupt
            ok[i] = False
    return out, ok
