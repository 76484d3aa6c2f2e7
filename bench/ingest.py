"""Ray Data ingest throughput beside a plain single-process reader, for PNG and raw shards, in one run.

    flock /tmp/facegen-ray.lock .venv/bin/python bench/ingest.py --shards out/demo/shards64 \\
        [--epochs 3] [--repeat 4] [--num-cpus 1,2] [--consumed out/bench/train_overhead/overhead.json]

``--shards`` is one format; the other (``--other``, default ``<shards>-raw`` or ``<shards>-png``) is prepared
from the same source with the same parameters if it is not there yet (``facegen prepare`` of
``manifest.source``; nothing is written when it is up to date). Both paths do the same work per row (Parquet
read, decode: PNG or a reshape, flip, tensor conversion); Ray Data spreads the read and decode over tasks and
overlaps them with consumption; each Ray Data run is made twice, lazy (the pipeline re-executed every epoch)
and cached (decoded once into the object store, as ``data.cache`` does for splits that fit). ``--repeat``
lists the train shards that many times, so an epoch is long enough to measure a rate rather than the
pipeline's start. The first Ray epoch includes the start-up, so the
steady rate is epochs 2.. . ``--num-cpus 1,2``: the Ray Data runs again per logical CPU count (a fresh local
Ray each), for scaling. ``--consumed``: the images/s a trainer consumes (a number, or ``overhead.json`` of
bench/train_overhead.py: its ``ray1`` variant), so the ingest rate is also shown as a multiple of it.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegen.data.pipeline import READ_COLUMNS, TrainCollate, decode_batch, load_split, shard_paths  # noqa: E402
from facegen.data.shards import read_manifest, write_shards  # noqa: E402
from facegen.errors import DatasetError  # noqa: E402


def other_format(manifest, out: str):
    """The same shards in the other image format at ``out``: written from ``manifest.source`` unless present."""
    from facegen.data.prepare import BUNDLED, READERS

    fmt = "png" if manifest.image_format == "raw" else "raw"
    try:
        other = read_manifest(out)
        if other.image_format == fmt and other.fingerprint == manifest.fingerprint:
            return other
    except DatasetError:
        pass
    params = manifest.params
    source = (BUNDLED[manifest.dataset]() if manifest.dataset in BUNDLED
              else READERS[manifest.dataset](manifest.source))
    source = dataclasses.replace(source, crop=tuple(params["crop"]))
    print(f"writing {fmt} shards of {manifest.source} to {out}", file=sys.stderr)
    return write_shards(source, out, resolution=manifest.resolution, rows_per_shard=params["rows_per_shard"],
                        balance=params["balance"], seed=params["seed"], progress=False, image_format=fmt)


def repeated(manifest, repeat: int):
    """The manifest with its train shards listed ``repeat`` times (longer epochs, same files)."""
    return dataclasses.replace(manifest, splits={"train": manifest.splits["train"] * repeat})


def plain_reader(manifest, batch_size: int) -> tuple[int, float]:
    """Single process: read each shard, decode in batches, collate. Returns (images, seconds)."""
    import pyarrow.parquet as pq

    started, images = time.perf_counter(), 0
    filesystem, paths = shard_paths(manifest, "train")
    collate = TrainCollate(seed=0, epoch=0, hflip=True)
    for path in paths:
        table = pq.read_table(path, filesystem=filesystem, columns=list(READ_COLUMNS))
        for start in range(0, table.num_rows, batch_size):
            batch = collate(decode_batch(table.slice(start, batch_size), manifest.resolution,
                                         manifest.image_format))
            images += batch["image"].shape[0]
    return images, time.perf_counter() - started


def ray_epochs(manifest, batch_size: int, epochs: int, cached: bool) -> list[tuple[int, float]]:
    """Per epoch (images, seconds) through ``iter_torch_batches``: the lazy pipeline re-executed every epoch,
    or (``cached``, what ``data.cache`` does for a split that fits) decoded once into the object store, the
    first epoch paying for it."""
    ds = load_split(manifest, "train")
    out = []
    for epoch in range(epochs):
        started, images = time.perf_counter(), 0
        if cached and epoch == 0:
            ds = ds.materialize()
        for batch in ds.iter_torch_batches(batch_size=batch_size,
                                           collate_fn=TrainCollate(seed=0, epoch=epoch, hflip=True)):
            images += batch["image"].shape[0]
        out.append((images, time.perf_counter() - started))
    return out


def consumed_rate(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return json.loads(Path(text).read_text())["variants"]["ray1"]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="out/demo/shards64")
    parser.add_argument("--other", default=None, help="the other format's folder (default: <shards>-<format>)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--num-cpus", default=None, help="logical CPUs for Ray, or a list: 1,2")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="intra-op threads of this process (the collate's uint8 -> float): 2 threads on a "
                             "loaded 2-core box made one batch's conversion 100x slower than 1 (default: 1)")
    parser.add_argument("--consumed", default=None, help="trainer images/s, or bench/train_overhead's overhead.json")
    args = parser.parse_args()

    import ray
    import torch

    from facegen.runtime import init_ray

    torch.set_num_threads(args.torch_threads)  # the same for both paths: Ray Data collates in this process

    consumed = consumed_rate(args.consumed)  # before anything long: a wrong path fails at once
    first = read_manifest(args.shards)
    other = args.other or f"{args.shards.rstrip('/')}-{'png' if first.image_format == 'raw' else 'raw'}"
    if Path(other).resolve() == Path(args.shards).resolve():
        raise SystemExit("error: --other must be another folder than --shards")
    second = other_format(first, other)
    manifests = {m.image_format: repeated(m, args.repeat) for m in (first, second)}
    plain = {fmt: plain_reader(m, args.batch_size) for fmt, m in manifests.items()}
    cpus = [int(c) for c in args.num_cpus.split(",")] if args.num_cpus else [None]
    runs = {}
    for n in cpus:
        init_ray(n)
        label = int(ray.cluster_resources()["CPU"])
        for fmt, manifest in manifests.items():
            for cached in (False, True):
                runs[(fmt, label, cached)] = ray_epochs(manifest, args.batch_size, args.epochs, cached)
        ray.shutdown()

    def steady(epochs):
        part = epochs[1:] or epochs
        return sum(n for n, _ in part) / sum(s for _, s in part)

    print(f"{first.resolution} px, {manifests['raw'].rows('train')} train images per pass, batch {args.batch_size}")
    print(f"{'path':<42} {'images':>8} {'seconds':>9} {'images/s':>10} {'vs plain':>9}")
    result = {"bench": "ingest", "resolution": first.resolution, "images_per_pass": manifests["raw"].rows("train"),
              "trainer_images_per_s": consumed}
    for fmt in ("png", "raw"):
        n, s = plain[fmt]
        base = n / s
        print(f"{'plain reader, ' + fmt:<42} {n:>8} {s:>9.2f} {base:>10.0f} {1:>8.2f}x")
        result[f"plain_{fmt}_images_per_s"] = base
        for (f, label, cached), epochs in runs.items():
            if f != fmt:
                continue
            for i, (n, s) in enumerate(epochs):
                what = f"Ray Data {label} CPUs, {fmt}{', cached' if cached else ''}, epoch {i + 1}"
                print(f"{what:<42} {n:>8} {s:>9.2f} {n / s:>10.0f} {n / s / base:>8.2f}x")
            key = f"ray_{fmt}_{label}cpu{'_cached' if cached else ''}"
            result[f"{key}_steady_images_per_s"] = steady(epochs)
            result[f"{key}_vs_plain_{fmt}"] = steady(epochs) / base
            result[f"{key}_vs_plain_png"] = steady(epochs) / (plain["png"][0] / plain["png"][1])
            if consumed:
                result[f"{key}_vs_trainer"] = steady(epochs) / consumed
    result["plain_raw_vs_plain_png"] = result["plain_raw_images_per_s"] / result["plain_png_images_per_s"]
    for key, value in result.items():
        if "_vs_" in key:
            print(f"{key}: {value:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
