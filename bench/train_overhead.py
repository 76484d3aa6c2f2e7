"""What Ray Train costs over a plain PyTorch loop: same model, data and images, measured in one run.

    flock /tmp/facegen-ray.lock .venv/bin/python bench/train_overhead.py \\
        --config configs/vae_demo64.yaml --epochs 3 --rounds 2 [--variant before1:1:train.torch_threads=1]

Variants, each a fresh process run back to back and repeated ``--rounds`` times, interleaved, so a shared
machine's load spreads over all of them:

* ``plain``: one process, ``torch.set_num_threads(all cores)``, reading the Parquet shards and decoding the
  images (PNG, or a reshape for raw shards) inside the measured loop (``decode_batch`` + ``TrainCollate``,
  what Ray Data's tasks do), then the same step code as the workers (``loop.train_one_epoch``).
* ``ray1`` / ``ray2``: ``facegen train`` with 1 worker (1.5 of the 2 CPUs, Ray Data decodes on the rest)
  and 2 workers (0.5 CPU each): local Ray start, Ray Data, DDP, validation, checkpoints, bundle export.

Steady-state images/s comes from epochs 2.. (epoch 1 holds the pipeline's warm-up); ``overhead_s`` is
the process's wall time minus what its images take at that steady rate: start-up, warm-up, validation,
checkpoints, export. Ratios: ray1 / plain and ray2 / (ray1 scaled by cores used: both use all cores).
Prints a table and one JSON line (also ``--out/overhead.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Ray sees 3 logical CPUs on the 2 cores: the workers reserve 2 (one per core), Ray Data's light decode the
# third. Entries starting with "--" are ``facegen train`` flags, the others config overrides.
DEFAULT_VARIANTS = ("plain:0:", "ray1:1:--num-cpus=3,train.cpus_per_worker=2",
                    "ray2:2:--num-cpus=3,train.cpus_per_worker=1")


def run_bounded(cmd: list[str], limit: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` in its own process group, interrupted (Ray shuts down) then killed past ``limit``."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            err += f"\nerror: stopped after {limit:.0f} s"
            return subprocess.CompletedProcess(cmd, 124, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def plain_child(args: argparse.Namespace) -> None:
    """The plain loop (runs in its own process): prints one JSON line of per-epoch (images, seconds)."""
    import pyarrow.parquet as pq
    import torch

    from facegen.config import load_config
    from facegen.data.pipeline import READ_COLUMNS, TrainCollate, decode_batch, shard_paths
    from facegen.data.shards import read_manifest
    from facegen.pretrained import build_for_training
    from facegen.training.loop import epoch_seed, make_optimizers, train_one_epoch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    cfg = load_config(args.config, args.overrides)
    manifest = read_manifest(cfg.data.shards)
    torch.manual_seed(cfg.train.seed)
    model = build_for_training(cfg.model)
    optimizers = make_optimizers(model, cfg)
    filesystem, paths = shard_paths(manifest, "train")
    batch_size = cfg.data.batch_size

    def batches(epoch: int):
        collate = TrainCollate(seed=cfg.train.seed, epoch=epoch, hflip=cfg.data.hflip)
        left = cfg.data.max_rows or manifest.rows("train")
        for path in paths:  # read and decode inside the loop, as every epoch of the Ray pipeline does
            table = pq.read_table(path, filesystem=filesystem, columns=list(READ_COLUMNS)).slice(0, left)
            left -= table.num_rows
            for start in range(0, table.num_rows - batch_size + 1, batch_size):  # drop_last, as training
                yield collate(decode_batch(table.slice(start, batch_size), manifest.resolution,
                                           manifest.image_format))

    epochs = []
    for epoch in range(cfg.train.epochs):
        torch.manual_seed(epoch_seed(cfg.train.seed, epoch, 0))
        model.set_epoch(epoch)
        started = time.perf_counter()
        means, seen, _ = train_one_epoch(model, model, optimizers, batches(epoch), torch.device("cpu"),
                                         contextlib.nullcontext())
        means.reduce()  # the same once-per-epoch metric work as the workers
        epochs.append((seen, time.perf_counter() - started))
    print("PLAIN " + json.dumps({"epochs": epochs, "threads": torch.get_num_threads()}), flush=True)


def run_variant(name: str, workers: int, overrides: list[str], args, round_: int) -> dict:
    """One variant in a fresh process; returns its wall time and per-epoch (images, seconds)."""
    common = [f"train.epochs={args.epochs}", *args.set]
    flags = [o for o in overrides if o.startswith("--")]
    overrides = [o for o in overrides if not o.startswith("--")]
    tree = args.trees.get(name)  # an exported older commit, for a before/after pair in one run
    env = {**os.environ, "RAY_ADDRESS": "", **({"PYTHONPATH": tree} if tree else {})}
    started = time.perf_counter()
    if workers == 0:
        cmd = [sys.executable, __file__, "--plain-child", "--config", args.config, *common, *overrides]
        out = run_bounded(cmd, args.run_limit, cwd=ROOT)
        wall = time.perf_counter() - started
        if out.returncode:
            raise SystemExit(f"error: {name} failed:\n{out.stderr[-3000:]}")
        line = next(x for x in out.stdout.splitlines() if x.startswith("PLAIN "))
        info = json.loads(line[len("PLAIN "):])
        return {"wall_s": wall, "epochs": info["epochs"], "threads": info["threads"], "data_wait_frac": None}
    run_name = f"{name}_r{round_}"
    storage = Path(args.out) / "runs"
    shutil.rmtree(storage / run_name, ignore_errors=True)  # a fresh run, never a resumed one
    metrics_file = Path(args.out) / f"{run_name}.json"
    cmd = [sys.executable, "-m", "facegen.cli", "train", *flags, "--config", str(ROOT / args.config), *common,
           f"train.num_workers={workers}", f"train.storage_path={storage.resolve()}", f"train.name={run_name}",
           *overrides, "--metrics-out", str(metrics_file.resolve())]
    out = run_bounded(cmd, args.run_limit, cwd=tree or ROOT, env=env)
    wall = time.perf_counter() - started
    (Path(args.out) / f"{run_name}.log").write_text(out.stdout + out.stderr)
    if out.returncode:
        raise SystemExit(f"error: {name} failed (log {args.out}/{run_name}.log):\n{out.stderr[-3000:]}")
    history = json.loads(metrics_file.read_text())["history"]
    per_epoch = args.train_rows // args.batch_size * args.batch_size
    epochs = [(per_epoch, per_epoch / h["train/images_per_s"]) for h in history]
    waits = [h["train/data_wait_frac"] for h in history[1:] if "train/data_wait_frac" in h]
    shutil.rmtree(storage / run_name, ignore_errors=True)
    return {"wall_s": wall, "epochs": epochs, "threads": None,
            "data_wait_frac": sum(waits) / len(waits) if waits else None}


def summarize(runs: list[dict]) -> dict:
    """Steady rate over epochs 2.. of every round; overhead = wall - images / steady rate (mean of rounds)."""
    steady_images = sum(n for r in runs for n, _ in r["epochs"][1:])
    steady_seconds = sum(s for r in runs for _, s in r["epochs"][1:])
    rate = steady_images / steady_seconds
    overheads = [r["wall_s"] - sum(n for n, _ in r["epochs"]) / rate for r in runs]
    waits = [r["data_wait_frac"] for r in runs if r["data_wait_frac"] is not None]
    return {"images_per_s": rate, "overhead_s": sum(overheads) / len(overheads),
            "wall_s": sum(r["wall_s"] for r in runs) / len(runs),
            "per_round_images_per_s": [sum(n for n, _ in r["epochs"][1:]) / sum(s for _, s in r["epochs"][1:])
                                       for r in runs],
            "data_wait_frac": sum(waits) / len(waits) if waits else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/vae_demo64.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="k=v",
                        help="config override for every variant, e.g. data.shards=... or data.max_rows=256")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant (>= 2; epoch 1 is warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="times each variant runs, interleaved")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME:WORKERS:k=v,k=v",
                        help="replaces the default variants; WORKERS 0 is the plain loop")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                        help="run variant NAME from the source tree DIR, e.g. one made by "
                             "`git archive HEAD | tar -x -C DIR` before a change: before/after in one run")
    parser.add_argument("--out", default="out/bench/train_overhead")
    parser.add_argument("--run-limit", type=float, default=300, help="seconds before a variant's run is stopped")
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--plain-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_child:
        plain_child(args)
        return 0
    args.trees = dict(t.split("=", 1) for t in args.tree)
    args.out = str(Path(args.out).resolve())
    if args.epochs < 2:
        raise SystemExit("error: --epochs must be >= 2 (epoch 1 is the warm-up)")

    from facegen.config import load_config
    from facegen.data.shards import read_manifest

    variants = []
    for text in args.variant or DEFAULT_VARIANTS:
        name, workers, overrides = (text.split(":", 2) + ["", ""])[:3]
        variants.append((name, int(workers), [o for o in overrides.split(",") if o]))
    cfg = load_config(args.config, args.set)
    if "://" not in cfg.data.shards:  # absolute, so a variant run from another tree reads the same shards
        args.set.append(f"data.shards={(ROOT / cfg.data.shards).resolve()}")
    args.train_rows = read_manifest(cfg.data.shards).rows("train")
    if cfg.data.max_rows:
        args.train_rows = min(args.train_rows, cfg.data.max_rows)
    args.batch_size = cfg.data.batch_size
    Path(args.out).mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
    for round_ in range(args.rounds):
        for name, workers, overrides in variants:
            runs[name].append(run_variant(name, workers, overrides, args, round_))
            (Path(args.out) / "runs.json").write_text(json.dumps(runs))  # kept if a later run is stopped
            last = runs[name][-1]
            print(f"  round {round_ + 1} {name:<12} wall {last['wall_s']:6.1f} s  epochs "
                  + " ".join(f"{n / s:.0f}" for n, s in last["epochs"]) + " img/s", file=sys.stderr, flush=True)

    table = {name: summarize(r) for name, r in runs.items()}
    base = table.get("plain")
    one = table.get("ray1")
    print(f"\n{args.config}, {args.epochs} epochs x {args.train_rows} images, batch {args.batch_size}, "
          f"{args.rounds} rounds, {os.cpu_count()} cores")
    print(f"{'variant':<14}{'img/s':>8}{'overhead s':>12}{'wall s':>8}{'data wait':>11}{'vs plain':>10}")
    for name, row in table.items():
        wait = f"{row['data_wait_frac']:.3f}" if row["data_wait_frac"] is not None else "-"
        vs = f"{row['images_per_s'] / base['images_per_s']:.3f}" if base else "-"
        print(f"{name:<14}{row['images_per_s']:>8.0f}{row['overhead_s']:>12.1f}{row['wall_s']:>8.1f}{wait:>11}{vs:>10}")
    ratios = {}
    if base and one:
        ratios["ray1_vs_plain"] = one["images_per_s"] / base["images_per_s"]
    if one and "ray2" in table:  # both variants use every core, so the scaled 1-worker figure is ray1 itself
        ratios["ray2_vs_ray1_scaled"] = table["ray2"]["images_per_s"] / one["images_per_s"]
    waits = {name: row["data_wait_frac"] for name, row in table.items() if row["data_wait_frac"] is not None}
    if waits:
        print("data wait: the share of a worker's training time spent waiting for its next batch (epochs 2..)")
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    result = {"bench": "train_overhead", "config": args.config, "epochs": args.epochs, "rounds": args.rounds,
              "variants": table, "ratios": ratios}
    (Path(args.out) / "overhead.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
