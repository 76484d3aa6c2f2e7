"""Handwritten digits, the prototyping datasets: scikit-learn's bundled 8x8 set, and MNIST from IDX files.

Both become a :class:`SourceDataset` (``digits`` / ``mnist``) with ``label_names = {"label": ("0", ...,
"9")}`` and each record's ``label`` set to its digit. Images are grayscale, white ink on black, stored at
their native size; the shard writer converts them to RGB and resizes them (bicubic) like any face, so
``facegen prepare --dataset digits`` gives 32x32 RGB digits (32 is the default resolution of both).

They come as arrays, not image files, so the readers PNG-encode each image into ``SourceDataset.images``
(keyed by ``image_path``), which the shard writer reads instead of the filesystem: nothing but the shards
is ever written.

* ``digits``: ``sklearn.datasets.load_digits()`` (1797 images, 8x8, values 0..16, shipped inside
  scikit-learn: no download). Splits are fixed: images ranked by the SHA-1 of their key, the first 10% are
  val, the next 10% test, the rest train (the set is ordered 0, 1, ..., 9, 0, ..., so index-based splits
  would skew classes).
* ``mnist``: a folder or URI holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``) and also
  accepted as ``train-images.idx3-ubyte`` (a common mirror spelling). The last 1/12 of train (5000 of
  60000, the usual validation set) is val; t10k is test.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib

import numpy as np
import pyarrow.fs as pafs

from facegen import io as fsio
from facegen.data.records import FaceRecord, SourceDataset
from facegen.errors import DatasetError
from facegen.images import encode_png

DIGIT_LABELS: dict[str, tuple[str, ...]] = {"label": tuple(str(d) for d in range(10))}
DIGITS_SOURCE = "sklearn.datasets.load_digits"
HOLDOUT_SHARE = 10  # digits: 1/10 val, 1/10 test
MNIST_VAL_SHARE = 12  # mnist: the last 1/12 of train is val
MNIST_FILES = {"train": ("train-images", "train-labels"), "t10k": ("t10k-images", "t10k-labels")}
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST uses


def _dataset(name: str, root: str, filesystem: pafs.FileSystem, keys: list[str], splits: list[str],
             labels, pixels) -> SourceDataset:
    """A digits SourceDataset from keys, splits, N labels and N images, each (H, W) uint8."""
    records = [FaceRecord(key=key, image_path=key, split=split, label=int(label))
               for key, split, label in zip(keys, splits, labels)]
    return SourceDataset(name=name, root=root, filesystem=filesystem, records=records,
                         label_names=dict(DIGIT_LABELS), crop=("full",),
                         images={key: encode_png(image) for key, image in zip(keys, pixels)})


def read_digits() -> SourceDataset:
    """scikit-learn's bundled digits as a SourceDataset (1439 train, 179 val, 179 test)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255 / 16)).astype(np.uint8)  # 0..16 ink levels -> 0..255
    keys = [f"{i:04d}.png" for i in range(len(pixels))]
    ranked = sorted(keys, key=lambda key: hashlib.sha1(key.encode()).hexdigest())
    hold = len(keys) // HOLDOUT_SHARE
    split_of = {key: "val" if i < hold else "test" if i < 2 * hold else "train" for i, key in enumerate(ranked)}
    return _dataset("digits", DIGITS_SOURCE, pafs.LocalFileSystem(), keys, [split_of[k] for k in keys],
                    bunch.target, pixels)


def parse_idx(data: bytes, where: str, ndim: int) -> np.ndarray:
    """An IDX file's bytes (gzipped or not) -> uint8 array of ``ndim`` dimensions.

    Layout: two zero bytes, type code 0x08 (unsigned byte), the number of dimensions, each dimension as a
    big-endian uint32, then the values. Anything else raises :class:`DatasetError` naming ``where``.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{where}: corrupt gzip ({exc})") from None
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DatasetError(f"{where}: not an IDX file (bad magic number)")
    if data[2] != _IDX_UBYTE or data[3] != ndim:
        raise DatasetError(f"{where}: expected {ndim}-d unsigned-byte IDX data, got type 0x{data[2]:02x} "
                           f"with {data[3]} dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{where}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DatasetError(f"{where}: dimensions {'x'.join(map(str, dims))} need {expected} bytes of data, "
                           f"file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_raw(fs: pafs.FileSystem, path: str) -> bytes:
    """The file's bytes as stored: pyarrow would gunzip ``.gz`` files by name, ``parse_idx`` does it by
    magic number and reports a corrupt archive as a DatasetError."""
    with fs.open_input_stream(path, compression=None) as stream:
        return stream.read()


def _find_idx(fs: pafs.FileSystem, root: str, stem: str, kind: str) -> str:
    """Path of ``stem-kind-ubyte`` (or ``stem.kind-ubyte``), optionally ``.gz``; DatasetError if absent."""
    names = [f"{stem}{sep}{kind}-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz")]
    infos = fs.get_file_info([fsio.join(root, name) for name in names])
    found = next((info.path for info in infos if info.type == pafs.FileType.File), None)
    if found is None:
        raise DatasetError(f"{fsio.to_uri(fs, fsio.join(root, names[0]))}: missing (MNIST needs "
                           f"train-/t10k- images-idx3-ubyte and labels-idx1-ubyte, optionally .gz)")
    return found


def read_mnist(src: str) -> SourceDataset:
    """Parse and validate MNIST IDX files under the folder or URI ``src`` (see the module docstring)."""
    fs, root = fsio.resolve(src)
    if not fsio.exists(fs, root):
        raise DatasetError(f"{src}: no such folder")
    keys: list[str] = []
    splits: list[str] = []
    labels: list[int] = []
    pixels: list[np.ndarray] = []
    for part, (image_stem, label_stem) in MNIST_FILES.items():
        image_path, label_path = _find_idx(fs, root, image_stem, "idx3"), _find_idx(fs, root, label_stem, "idx1")
        images = parse_idx(_read_raw(fs, image_path), fsio.to_uri(fs, image_path), 3)
        digits = parse_idx(_read_raw(fs, label_path), fsio.to_uri(fs, label_path), 1)
        if len(digits) != len(images):
            raise DatasetError(f"{fsio.to_uri(fs, label_path)}: {len(digits)} labels for {len(images)} images "
                               f"in {fsio.to_uri(fs, image_path)}")
        if len(digits) and digits.max() > 9:
            bad = int(np.argmax(digits > 9))
            raise DatasetError(f"{fsio.to_uri(fs, label_path)}: label {digits[bad]} at index {bad} is not a digit")
        n = len(images)
        val_from = n - n // MNIST_VAL_SHARE if part == "train" else n
        keys += [f"{part}/{i:05d}.png" for i in range(n)]
        splits += ["test" if part == "t10k" else "val" if i >= val_from else "train" for i in range(n)]
        labels += digits.tolist()
        pixels += list(images)
    return _dataset("mnist", fsio.to_uri(fs, root), fs, keys, splits, labels, pixels)
