"""Ray Data ingest throughput beside a plain single-process decode of the same shards, in one run.

    python bench/ingest.py --shards out/demo/shards64 [--epochs 2] [--num-cpus 2]

Both paths do the same work per row (Parquet read, PNG decode, flip, tensor conversion); Ray Data spreads
the decode over ``map_batches`` tasks and overlaps it with consumption. The first Ray epoch includes the
pipeline's start-up, so later epochs are reported separately. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegen.data.pipeline import READ_COLUMNS, TrainCollate, decode_batch, load_split, shard_paths  # noqa: E402
from facegen.data.shards import read_manifest  # noqa: E402


def plain_decode(manifest, batch_size: int) -> tuple[int, float]:
    """Single process: read each shard, decode in batches, collate. Returns (images, seconds)."""
    import pyarrow.parquet as pq

    started, images = time.perf_counter(), 0
    filesystem, paths = shard_paths(manifest, "train")
    collate = TrainCollate(seed=0, epoch=0, hflip=True)
    for path in paths:
        table = pq.read_table(path, filesystem=filesystem, columns=list(READ_COLUMNS))
        for start in range(0, table.num_rows, batch_size):
            batch = collate(decode_batch(table.slice(start, batch_size), manifest.resolution))
            images += batch["image"].shape[0]
    return images, time.perf_counter() - started


def ray_epochs(manifest, batch_size: int, epochs: int) -> list[tuple[int, float]]:
    ds = load_split(manifest, "train")
    out = []
    for epoch in range(epochs):
        started, images = time.perf_counter(), 0
        for batch in ds.iter_torch_batches(batch_size=batch_size,
                                           collate_fn=TrainCollate(seed=0, epoch=epoch, hflip=True)):
            images += batch["image"].shape[0]
        out.append((images, time.perf_counter() - started))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="out/demo/shards64")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args()

    import ray

    from facegen.runtime import init_ray

    manifest = read_manifest(args.shards)
    init_ray(args.num_cpus)
    plain_images, plain_s = plain_decode(manifest, args.batch_size)
    epochs = ray_epochs(manifest, args.batch_size, args.epochs)
    ray.shutdown()

    plain_rate = plain_images / plain_s
    rows = [("plain single-process decode", plain_images, plain_s, plain_rate)]
    rows += [(f"Ray Data epoch {i + 1}", n, s, n / s) for i, (n, s) in enumerate(epochs)]
    print(f"{'path':<30} {'images':>8} {'seconds':>9} {'images/s':>10} {'vs plain':>9}")
    for name, n, s, rate in rows:
        print(f"{name:<30} {n:>8} {s:>9.2f} {rate:>10.0f} {rate / plain_rate:>8.2f}x")
    steady = [n / s for n, s in epochs[1:]] or [epochs[0][0] / epochs[0][1]]
    print(json.dumps({"bench": "ingest", "resolution": manifest.resolution, "plain_images_per_s": plain_rate,
                      "ray_first_epoch_images_per_s": epochs[0][0] / epochs[0][1],
                      "ray_steady_images_per_s": sum(steady) / len(steady),
                      "ratio_steady_vs_plain": sum(steady) / len(steady) / plain_rate}))


if __name__ == "__main__":
    main()
