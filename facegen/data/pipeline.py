"""The Ray Data ingest pipeline: Parquet shards -> decoded images -> each Train worker's batches.

Ray Data does the reading and the decoding (``map_batches`` tasks spread over the cluster: a reshape for raw
shards, a PNG decode per row for PNG ones, see ``image_format``); Ray Train's
``streaming_split`` gives every worker an equal share. On the worker, :class:`TrainCollate` turns a numpy
batch into tensors, drops rows that failed to decode (counting them) and applies the horizontal flip.

The flip and the shuffle are functions of ``(seed, epoch, row)`` only, never of which worker or which thread
sees a row, so a run resumed from a checkpoint replays exactly the epochs an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from facegen import io as fsio
from facegen.data.image_format import decode_column
from facegen.images import from_uint8, uint8_tensor

LABEL_COLUMNS = ("race", "age", "gender", "label")
READ_COLUMNS = ("key", "image", "attrs", *LABEL_COLUMNS)
# CPUs of one Parquet read task and one decode task. They run outside the Train workers' placement group, so a
# job must leave INGEST_CPUS free beside its workers (facegen.training.resources); at Ray Data's default of 1
# CPU per read, 2 workers x 0.75 CPU on a 2-CPU node starve the reader.
READ_CPUS = DECODE_CPUS = 0.25
INGEST_CPUS = READ_CPUS + DECODE_CPUS


def key_hash(keys: list[str]) -> np.ndarray:
    """Stable 63-bit hash of each row key (independent of Python's per-process hash seed): (N,) int64."""
    return np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") >> 1
                     for k in keys], dtype=np.int64)


def decode_batch(batch: pa.Table, resolution: int, image_format: str) -> dict[str, np.ndarray]:
    """Ray Data map_batches UDF: stored images (``image_format``: the manifest's) -> uint8 images, list labels
    -> dense arrays.

    Returns image (N, R, R, 3) uint8, attrs (N, A) int8, race/age/gender/label (N,) int16, row_hash (N,) int64 and
    ok (N,) bool. A row whose image is not an R x R RGB face in that format (a corrupt PNG, a raw blob of the
    wrong size) keeps ``ok=False`` and a black image, so it is counted and dropped on the worker instead of
    failing the whole block.
    """
    n = batch.num_rows
    images, ok = decode_column(batch.column("image"), image_format, resolution)
    attrs_col = batch.column("attrs").combine_chunks()
    width = len(attrs_col[0]) if n and attrs_col[0].is_valid else 0
    attrs = pc.list_flatten(attrs_col).to_numpy(zero_copy_only=False).astype(np.int8).reshape(n, width)
    out = {"image": images, "attrs": attrs, "ok": ok, "row_hash": key_hash(batch.column("key").to_pylist())}
    for name in LABEL_COLUMNS:
        out[name] = batch.column(name).to_numpy(zero_copy_only=False).astype(np.int16)
    return out


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash (Steele et al.), vectorised; uint64 arithmetic wraps by design."""
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class TrainCollate(NumpyBatchCollateFn):
    """``iter_torch_batches`` collate_fn: numpy batch -> model batch (see ``models.base`` for the keys).

    Adds ``corrupt_rows``: a 0-d int64 tensor, how many rows of this batch were dropped as undecodable.
    A ``NumpyBatchCollateFn``, so Ray Data hands it numpy batches without the deprecation warning it prints on
    every epoch for a plain callable (Ray >= 2.47); it is an ordinary callable everywhere else.
    """

    seed: int
    epoch: int
    hflip: bool
    pixels: bool = False
    """Hand ``image`` over as uint8 ``(N, 3, H, W)`` (a quarter of the bytes to pin and copy) for the trainer to
    turn into floats on its GPU (``facegen.images.uint8_to_float``); False: float32 in [-1, 1] here."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        ok = batch["ok"].astype(bool)
        images = batch["image"][ok]  # fancy indexing copies, so the read-only Arrow buffers stay untouched
        if self.hflip:
            salt = np.uint64((self.seed * 1_000_003 + self.epoch) & 0xFFFFFFFFFFFFFFFF)
            flip = (_splitmix64(batch["row_hash"][ok].astype(np.uint64) ^ salt) & np.uint64(1)).astype(bool)
            images[flip] = images[flip, :, ::-1]
        out = {"image": uint8_tensor(images) if self.pixels else from_uint8(images),
               "attrs": torch.from_numpy(batch["attrs"][ok].astype(np.float32)),
               "corrupt_rows": torch.tensor(int((~ok).sum()))}
        for name in LABEL_COLUMNS:
            out[name] = torch.from_numpy(batch[name][ok].astype(np.int64))
        return out


def shuffle_seed(seed: int, epoch: int) -> int:
    """The local-shuffle seed of an epoch: differs per epoch, identical on a resumed run."""
    return (seed * 7919 + epoch * 104729) % (2**31 - 1)


def shard_paths(manifest, split: str) -> tuple[pafs.FileSystem, list[str]]:
    """The filesystem and in-filesystem paths of a split's shards (S3 endpoints from the environment)."""
    filesystem, root = fsio.resolve(manifest.root)
    return filesystem, [fsio.join(root, shard.path) for shard in manifest.splits.get(split, [])]


def load_split(manifest, split: str, *, max_rows: int = 0):
    """A Ray Dataset of one split's decoded rows (lazy; executed by each epoch's iteration).

    ``manifest`` is a ``shards.Manifest``. Reads only the needed columns; ``max_rows`` caps the split.
    """
    import ray.data
    from ray.data.context import DataContext

    context = DataContext.get_current()
    # Same order every execution, so shuffles seeded per epoch are reproducible (and resumable).
    context.execution_options.preserve_order = True
    # Each epoch re-executes the pipeline; its bars would bury the epoch progress of the training loop.
    context.enable_progress_bars = False
    filesystem, paths = shard_paths(manifest, split)
    # Ray's V2 Parquet reader starts a pool of footer-reader actors (new processes) on every execution, i.e.
    # every epoch: seconds per epoch on a small machine, idle workers meanwhile (bench/train_overhead.py).
    # The V1 reader reads the few footers a manifest lists once, here; the flag is read only by this call.
    v2, context.use_datasource_v2 = context.use_datasource_v2, False
    try:
        ds = ray.data.read_parquet(paths, filesystem=filesystem, num_cpus=READ_CPUS)
    finally:
        context.use_datasource_v2 = v2
    ds = ds.select_columns(list(READ_COLUMNS))
    if max_rows:
        ds = ds.limit(max_rows)
    return ds.map_batches(decode_batch, batch_format="pyarrow", batch_size=256,
                          fn_kwargs={"resolution": manifest.resolution, "image_format": manifest.image_format},
                          num_cpus=DECODE_CPUS)


# The share of the cluster's object store a run's decoded splits may take under ``data.cache: auto``.
CACHE_SHARE = 0.25


def decoded_bytes(manifest, split: str, max_rows: int = 0) -> int:
    """Bytes a split's decoded rows take in Ray's object store (pixels, labels, per-row overhead)."""
    rows = min(manifest.rows(split), max_rows) if max_rows else manifest.rows(split)
    return rows * (3 * manifest.resolution**2 + len(manifest.attribute_names) + 64)


def training_splits(manifest, data, share: float = CACHE_SHARE) -> tuple[dict, str]:
    """The train and val Datasets of a run and a line saying how they are fed. ``data``: a ``DataConfig``.

    Cached (``data.cache``: ``always``, or ``auto`` when they fit in ``share`` of the cluster's object store):
    read and decoded once into the object store, so an epoch streams blocks instead of re-running the read
    and decode tasks: 30-37k images/s against 1.6-5.5k on 2 cores (the demo's 64 px shards, batch 64;
    bench/ingest.py). Otherwise each epoch re-executes the lazy pipeline, which holds any dataset."""
    import ray

    splits = {split: load_split(manifest, split, max_rows=data.max_rows) for split in ("train", "val")}
    size = sum(decoded_bytes(manifest, split, data.max_rows) for split in splits)
    store = ray.cluster_resources().get("object_store_memory", 0)
    fits = size <= share * store
    mb = f"{size / 2**20:,.0f} MB decoded"
    if data.cache == "never" or (data.cache == "auto" and not fits):
        why = "data.cache=never" if data.cache == "never" else f"over {share:.0%} of the object store"
        return splits, f"streaming the splits every epoch ({mb}, {why})"
    return ({split: ds.materialize() for split, ds in splits.items()},
            f"cached the decoded splits in Ray's object store ({mb} of {store / 2**20:,.0f} MB; data.cache="
            f"{data.cache})")


def read_examples(manifest, split: str, n: int) -> dict[str, torch.Tensor]:
    """The first ``n`` rows of a split as a model batch, read in-process (no Ray): for grids and reports."""
    import pyarrow.parquet as pq

    filesystem, paths = shard_paths(manifest, split)
    tables, rows = [], 0
    for path in paths:
        if rows >= n:
            break
        table = pq.read_table(path, filesystem=filesystem, columns=list(READ_COLUMNS))
        tables.append(table)
        rows += table.num_rows
    batch = decode_batch(pa.concat_tables(tables).slice(0, n), manifest.resolution, manifest.image_format)
    out = TrainCollate(seed=0, epoch=0, hflip=False)(batch)
    out.pop("corrupt_rows")
    return out
