"""Digits datasets: scikit-learn's bundled digits, MNIST IDX parsing (good and broken), and prepare to shards."""

from __future__ import annotations

import argparse
import gzip
import io
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facegen.data.digits import DIGIT_LABELS, parse_idx, read_digits, read_mnist
from facegen.data.image_format import decode_face
from facegen.data.prepare import add_prepare_arguments, run_prepare
from facegen.data.shards import read_manifest, write_shards
from facegen.errors import DatasetError


def idx_bytes(array: np.ndarray) -> bytes:
    """uint8 ``array`` in IDX format: 0, 0, type 0x08, ndim, big-endian dims, values."""
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(root: Path, n_train: int = 24, n_test: int = 5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny MNIST: train gzipped with the usual names, t10k plain with the dotted mirror spelling."""
    rng = np.random.default_rng(0)
    data = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        data[part] = (images, labels)
        if part == "train":
            (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
            (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
        else:
            (root / "t10k-images.idx3-ubyte").write_bytes(idx_bytes(images))
            (root / "t10k-labels.idx1-ubyte").write_bytes(idx_bytes(labels))
    return data


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image)


def test_sklearn_digits_records_splits_and_images():
    source = read_digits()
    assert source.name == "digits" and source.label_names == DIGIT_LABELS and source.crop == ("full",)
    assert len(source.records) == 1797 and len({r.key for r in source.records}) == 1797
    assert Counter(r.split for r in source.records) == {"train": 1439, "val": 179, "test": 179}
    for split in ("train", "val", "test"):  # hash-ranked splits keep every class in every split
        assert {r.label for r in source.records if r.split == split} == set(range(10))
    first = source.records[0]
    assert first.label == 0 and first.attrs == () and first.race == -1
    pixels = decode(source.images[first.image_path])
    from sklearn.datasets import load_digits

    assert np.array_equal(pixels, np.rint(load_digits().images[0] * 255 / 16))  # 8x8, ink 0..16 -> 0..255
    assert [r.split for r in read_digits().records] == [r.split for r in source.records]  # deterministic


def test_mnist_idx_files_round_trip(tmp_path):
    data = write_mnist(tmp_path)
    source = read_mnist(str(tmp_path))
    assert source.name == "mnist" and source.label_names == DIGIT_LABELS
    assert Counter(r.split for r in source.records) == {"train": 22, "val": 2, "test": 5}  # last 1/12 -> val
    assert [r.split for r in source.records[20:24]] == ["train", "train", "val", "val"]
    for part, offset in (("train", 0), ("t10k", 24)):
        images, labels = data[part]
        for i in (0, len(labels) - 1):
            record = source.records[offset + i]
            assert record.key == f"{part}/{i:05d}.png" and record.label == labels[i]
            assert np.array_equal(decode(source.images[record.image_path]), images[i])


@pytest.mark.parametrize("name, corrupt, message", [
    ("train-images-idx3-ubyte.gz", lambda b: b"\x01\x02" + b[2:], "not an IDX file"),
    ("train-images-idx3-ubyte.gz", lambda b: b[:-10], "need 18816 bytes of data, file has 18806"),
    ("train-labels-idx1-ubyte.gz", lambda b: idx_bytes(np.zeros(23, np.uint8)), "23 labels for 24 images"),
    ("train-labels-idx1-ubyte.gz", lambda b: idx_bytes(np.full(24, 10, np.uint8)), "label 10 at index 0"),
    ("t10k-images.idx3-ubyte", lambda b: bytes([0, 0, 0x0D, 3]) + b[4:], "got type 0x0d"),
    ("t10k-images.idx3-ubyte", lambda b: b[:8], "truncated IDX header"),
])
def test_malformed_idx_files_name_the_file(tmp_path, name, corrupt, message):
    write_mnist(tmp_path)
    path = tmp_path / name
    raw = path.read_bytes()
    zipped = name.endswith(".gz")
    body = corrupt(gzip.decompress(raw) if zipped else raw)
    path.write_bytes(gzip.compress(body) if zipped else body)
    with pytest.raises(DatasetError, match=message) as info:
        read_mnist(str(tmp_path))
    assert name in str(info.value) and "\n" not in str(info.value)


def test_missing_and_corrupt_gzip_files(tmp_path):
    square = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(parse_idx(idx_bytes(square), "square", 2), square)
    write_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"not gzip at all")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: corrupt gzip"):
        read_mnist(str(tmp_path))
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels.idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte: missing"):
        read_mnist(str(tmp_path))


def test_in_memory_images_through_the_process_pool_are_identical(tmp_path):
    (tmp_path / "src").mkdir()
    write_mnist(tmp_path / "src")
    source = read_mnist(str(tmp_path / "src"))
    one = write_shards(source, str(tmp_path / "one"), resolution=32, progress=False, workers=1)
    two = write_shards(source, str(tmp_path / "two"), resolution=32, progress=False, workers=2)
    assert [s.sha256 for s in one.splits["train"]] == [s.sha256 for s in two.splits["train"]]


def test_prepare_digits_end_to_end(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_prepare_arguments(parser)
    args = parser.parse_args(["--dataset", "digits", "--out", str(tmp_path / "digits32"), "--no-progress",
                              "--workers", "1"])
    assert run_prepare(args) == 0 and run_prepare(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("prepare digits: wrote train 1439, val 179, test 179 rows at 32px")
    assert "already up to date" in lines[1]
    manifest = read_manifest(str(tmp_path / "digits32"), verify=True)
    assert manifest.dataset == "digits" and manifest.resolution == 32 and manifest.label_names == DIGIT_LABELS
    table = pq.read_table(manifest.shard_uris("val")[0])
    assert sorted(set(table.column("label").to_pylist())) == list(range(10))
    pixels = decode_face(table.column("image")[0].as_py(), manifest.image_format, 32)
    assert pixels.shape == (32, 32, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])

    missing_src = parser.parse_args(["--dataset", "mnist", "--out", str(tmp_path / "m")])
    assert run_prepare(missing_src) == 2
    assert "error: --src: required for --dataset mnist" in capsys.readouterr().err
