"""Raw-pixel shards: the same pixels and training batches as PNG shards, wrong-size rows flagged, old PNG
manifests still read (and still up to date)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from facegen.data.celeba import read_celeba
from facegen.data.image_format import decode_column, decode_face
from facegen.data.pipeline import TrainCollate, decode_batch, load_split, read_examples
from facegen.data.shards import read_manifest, write_shards
from facegen.errors import DatasetError
from facegen.images import encode_png


@pytest.fixture
def both_formats(tmp_path, make_celeba):
    """The same 11 CelebA-layout images written as PNG shards and as raw shards (16 px, 3 rows per shard)."""
    make_celeba(tmp_path / "src", n=11)
    return {fmt: write_shards(read_celeba(str(tmp_path / "src")), str(tmp_path / fmt), resolution=16,
                              rows_per_shard=3, progress=False, workers=1, image_format=fmt)
            for fmt in ("png", "raw")}


def _faces(manifest) -> dict[str, np.ndarray]:
    out = {}
    for split in manifest.splits:
        for uri in manifest.shard_uris(split):
            table = pq.read_table(uri)
            assert table.schema.field("image").type == (pa.binary(16 * 16 * 3) if manifest.image_format == "raw"
                                                        else pa.binary())
            images, ok = decode_column(table.column("image"), manifest.image_format, 16)
            assert ok.all()
            out.update(zip(table.column("key").to_pylist(), images))
    return out


def test_raw_shards_hold_exactly_the_pixels_of_png_shards(both_formats):
    png, raw = both_formats["png"], both_formats["raw"]
    assert (png.image_format, raw.image_format) == ("png", "raw")
    assert read_manifest(raw.root) == raw and read_manifest(png.root) == png
    assert {s: png.rows(s) for s in png.splits} == {s: raw.rows(s) for s in raw.splits}
    png_faces, raw_faces = _faces(png), _faces(raw)
    assert png_faces.keys() == raw_faces.keys() and len(raw_faces) == 11
    for key, pixels in raw_faces.items():
        assert pixels.shape == (16, 16, 3) and np.array_equal(pixels, png_faces[key])
    assert np.array_equal(read_examples(raw, "test", 5)["image"], read_examples(png, "test", 5)["image"])


@pytest.mark.ray
def test_a_training_batch_from_raw_shards_equals_one_from_png_shards(ray_session, both_formats):
    def batches(manifest):  # epoch 1 with flips on: the flips, too, must not depend on the format
        return list(load_split(manifest, "train").iter_torch_batches(
            batch_size=4, collate_fn=TrainCollate(seed=5, epoch=1, hflip=True)))

    png, raw = batches(both_formats["png"]), batches(both_formats["raw"])
    assert len(raw) == len(png) == 2
    for a, b in zip(raw, png):
        assert a.keys() == b.keys() and int(a["corrupt_rows"]) == 0
        for name in a:
            assert torch.equal(a[name], b[name]), name


def test_a_wrong_size_raw_blob_is_flagged_like_a_corrupt_row():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    blobs = [p.tobytes() for p in pixels]
    blobs[1] = blobs[1][:-1]  # one byte short
    blobs[2] = blobs[2] * 2  # two faces' worth
    blobs[3] = encode_png(pixels[3])  # a PNG in a raw shard is not a raw face either
    n = len(blobs)
    table = pa.table({"key": [f"{i}.jpg" for i in range(n)], "image": pa.array(blobs, pa.binary()),
                      "attrs": pa.array([[1]] * n, pa.list_(pa.int8())),
                      **{c: pa.array([-1] * n, pa.int8()) for c in ("race", "age", "gender")},
                      "label": pa.array([-1] * n, pa.int16())})
    batch = decode_batch(table, resolution=8, image_format="raw")
    assert batch["ok"].tolist() == [True, False, False, False, True]
    assert np.array_equal(batch["image"][[0, 4]], pixels[[0, 4]]) and not batch["image"][1:4].any()
    out = TrainCollate(seed=0, epoch=0, hflip=False)(batch)
    assert int(out["corrupt_rows"]) == 3 and out["image"].shape == (2, 3, 8, 8)
    # A whole column of another resolution (shards that do not match their manifest), and a null row.
    wide = pa.array([p.tobytes() for p in pixels], pa.binary(8 * 8 * 3))
    assert not decode_column(wide, "raw", 4)[1].any()
    images, ok = decode_column(pa.array([blobs[0], None], pa.binary(8 * 8 * 3)), "raw", 8)
    assert ok.tolist() == [True, False] and np.array_equal(images[0], pixels[0])
    with pytest.raises(ValueError):
        decode_face(blobs[1], "raw", 8)


def test_a_manifest_from_before_image_format_reads_as_png_and_stays_up_to_date(both_formats):
    png = both_formats["png"]
    path = f"{png.root}/manifest.json"
    body = json.loads(open(path).read())
    del body["image_format"], body["params"]["image_format"]  # as written before the field existed
    with open(path, "w") as f:
        f.write(json.dumps(body))
    old = read_manifest(png.root)
    assert old.image_format == "png" and old.params["image_format"] == "png"
    assert read_examples(old, "train", 3)["image"].shape == (3, 3, 16, 16)
    source = read_celeba(png.source)
    assert write_shards(source, png.root, resolution=16, rows_per_shard=3, progress=False, workers=1,
                        image_format="png").reused
    body["image_format"] = "jpeg"
    with open(path, "w") as f:
        f.write(json.dumps(body))
    with pytest.raises(DatasetError, match="unknown image_format 'jpeg'"):
        read_manifest(png.root)
