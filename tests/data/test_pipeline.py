"""Synthetic faces -> CelebA reader -> Parquet shards -> Ray Data -> worker batches, checked end to end."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.data.pipeline import TrainCollate, decode_batch, key_hash, load_split
from facegen.data.shards import Manifest, Shard, read_manifest


def _rows(manifest, split):
    ds = load_split(manifest, split)
    return list(ds.iter_rows())


@pytest.mark.ray
def test_every_label_and_split_survives_the_round_trip(ray_session, synth_celeba, tiny_shards):
    factors = pq.read_table(f"{synth_celeba}/factors.parquet").to_pylist()
    truth = {int(key_hash([f["key"]])[0]): f for f in factors}
    manifest = read_manifest(tiny_shards, verify=True)
    seen = 0
    for split in ("train", "val", "test"):
        rows = _rows(manifest, split)
        assert len(rows) == manifest.rows(split)
        for row in rows:
            fact = truth[int(row["row_hash"])]
            assert fact["split"] == split
            # The ground truth of the renderer, not just the label file, reaches the training batch.
            assert row["attrs"].tolist() == [fact[name] for name in CELEBA_ATTRIBUTES]
            assert row["ok"] and row["image"].shape == (32, 32, 3)
            assert (row["race"], row["age"], row["gender"], row["label"]) == (-1, -1, -1, -1)
        seen += len(rows)
    assert seen == len(factors)


@pytest.mark.ray
def test_corrupt_rows_are_counted_and_skipped(ray_session, tiny_shards, tmp_path):
    manifest = read_manifest(tiny_shards)
    table = pq.read_table(f"{tiny_shards}/{manifest.splits['train'][0].path}")
    images = table.column("image").to_pylist()
    images[1] = b"not a png"
    images[5] = images[5][:40]  # truncated
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    (tmp_path / "train").mkdir()
    pq.write_table(table, tmp_path / "train" / "part-00000.parquet")
    data = (tmp_path / "train" / "part-00000.parquet").read_bytes()
    broken = Manifest(root=str(tmp_path), dataset="celeba", resolution=32, attribute_names=CELEBA_ATTRIBUTES,
                      label_names={}, source="test", params={}, fingerprint="x", image_format=manifest.image_format,
                      splits={"train": [Shard("train/part-00000.parquet", table.num_rows,
                                              hashlib.sha256(data).hexdigest(), len(data))]})
    batches = list(load_split(broken, "train").iter_torch_batches(
        batch_size=8, collate_fn=TrainCollate(seed=0, epoch=0, hflip=True)))
    assert sum(int(b["corrupt_rows"]) for b in batches) == 2
    assert sum(b["image"].shape[0] for b in batches) == table.num_rows - 2


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_flips_depend_on_seed_epoch_and_row_only():
    rng = np.random.default_rng(0)
    n = 64
    pixels = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    table = pa.table({"key": [f"{i:06d}.jpg" for i in range(n)], "image": [_png(p) for p in pixels],
                      "attrs": pa.array([[0, 1]] * n, pa.list_(pa.int8())),
                      **{c: pa.array([-1] * n, pa.int8()) for c in ("race", "age", "gender")},
                      "label": pa.array([-1] * n, pa.int16())})
    batch = decode_batch(table, resolution=8, image_format="png")
    assert np.array_equal(batch["image"], pixels) and batch["attrs"].shape == (n, 2)

    def flipped(epoch, rows=slice(None)):
        part = {k: v[rows] for k, v in batch.items()}
        out = TrainCollate(seed=3, epoch=epoch, hflip=True)(part)["image"]
        original = (pixels[rows].transpose(0, 3, 1, 2) / 127.5 - 1).astype(np.float32)
        same = np.isclose(out.numpy(), original, atol=1e-6).all(axis=(1, 2, 3))
        mirrored = np.isclose(out.numpy(), original[..., ::-1], atol=1e-6).all(axis=(1, 2, 3))
        assert (same ^ mirrored).all()  # each row is untouched or exactly mirrored left-right
        return mirrored

    whole = flipped(0)
    # The same rows flip the same way however the epoch is cut into batches (or workers).
    assert np.array_equal(np.concatenate([flipped(0, slice(0, 20)), flipped(0, slice(20, None))]), whole)
    assert 16 < whole.sum() < 48  # about half
    assert not np.array_equal(flipped(1), whole)  # a new epoch, new flips


def test_pixels_cross_as_uint8_and_become_the_same_floats_on_the_device():
    """What a GPU run gets (uint8 batches, converted after the copy) equals what a CPU run gets, bit for bit."""
    import torch

    from facegen.training.loop import to_device

    rng = np.random.default_rng(1)
    n = 16
    batch = {"image": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), "attrs": np.ones((n, 2), np.int8),
             "ok": np.ones(n, np.int8), "row_hash": np.arange(n, dtype=np.uint64),
             **{c: np.full(n, -1, np.int16) for c in ("race", "age", "gender", "label")}}
    floats = TrainCollate(seed=3, epoch=0, hflip=True)(dict(batch))
    pixels = TrainCollate(seed=3, epoch=0, hflip=True, pixels=True)(dict(batch))
    assert pixels["image"].dtype == torch.uint8 and pixels["image"].shape == (n, 3, 8, 8)
    pixels.pop("corrupt_rows"), floats.pop("corrupt_rows")
    moved = to_device(pixels, torch.device("cpu"))
    assert moved["image"].dtype == torch.float32 and torch.equal(moved["image"], floats["image"])
    assert torch.equal(moved["attrs"], floats["attrs"])


@pytest.mark.ray
def test_splits_that_fit_are_cached_once_and_hold_the_same_rows(ray_session, tiny_shards):
    from ray.data.dataset import MaterializedDataset

    from facegen.config import DataConfig
    from facegen.data.pipeline import training_splits

    manifest = read_manifest(tiny_shards)
    data = DataConfig(shards=tiny_shards, max_rows=40)
    cached, said = training_splits(manifest, data)  # auto: a few KB fit in a quarter of any object store
    assert all(isinstance(ds, MaterializedDataset) for ds in cached.values()) and "cached" in said
    streamed, said = training_splits(manifest, data, share=1e-12)  # auto, but over its share
    assert not any(isinstance(ds, MaterializedDataset) for ds in streamed.values()) and "streaming" in said
    for split in ("train", "val"):
        keys = lambda ds: [int(r["row_hash"]) for r in ds.iter_rows()]  # noqa: E731
        assert keys(cached[split]) == keys(streamed[split]) and len(keys(cached[split])) == min(
            40, manifest.rows(split))
    never, said = training_splits(manifest, DataConfig(shards=tiny_shards, cache="never"), share=1.0)
    assert not isinstance(never["train"], MaterializedDataset) and "data.cache=never" in said
    with pytest.raises(Exception, match="data.cache: must be auto, always or never"):
        DataConfig(cache="sometimes")
