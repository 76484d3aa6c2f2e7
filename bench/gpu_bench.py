"""A GPU session's figures in one process, most wanted first. The VAE's and InfoGAN's training step alone on a
resident batch, eager (32, 256, 1024) and the VAE's compiled with CUDA graphs (``bench/gpu_probes.py``). Then
the VAE at 64 px through ``facegen train``'s own path (Ray Data, Ray Train, bf16) at batch 256: images/s,
achieved TFLOP/s, data wait; compiled (``train.compile``); Serve edit throughput on the first bundle with the
models on a GPU share; without the local shuffle buffer; batch 1024; the configs' own batches (VAE, InfoGAN).
Given ``--judge``, BEGAN and the InfoGAN trained longer than a CPU allows, their samples judged. Last, what a
fresh process pays before its first step (torch import, CUDA context, a 1-process NCCL group, NCCL's lines).
``bench/gpu.sh`` runs it after the CUDA tests.

    python bench/gpu_bench.py --out $OUT --budget-s 400   # on a GPU machine
    python bench/gpu_bench.py --out $OUT --cpu            # the same steps on CPU at tiny sizes (a dry run)
    python bench/gpu_bench.py --out $OUT --only gan_began,gan_infogan --judge CLASSIFIER_BUNDLE

Images/s and the data-wait fraction are the epochs after the first (which holds the pipeline's warm-up);
FLOPs are counted on one training step (every player, forward and backward) with
``torch.utils.flop_counter.FlopCounterMode``. Each step's failure is recorded in the JSON and the others
still run; a step that would end after ``--budget-s`` is skipped; the exit status is non-zero if any failed.
Writes ``OUT/gpu.json`` after every step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.gpu_probes import flops_per_image, gan_run, process_start, step_rates  # noqa: E402

# (name, config, batch size or None for the config's, overrides), most wanted first. Batch 256 says what the path
# feeds a GPU given more work per step (the first lent H200: 1,676 img/s, data wait 0.67); compiled, CUDA graphs
# lift a launch-bound step (the second: 1.9x on the step alone); Serve runs on the first bundle; then without the
# local shuffle buffer (Ray Data's iterator shuffles in Python), batch 1024, and the configs' own batches.
VAE, INFOGAN = "configs/vae_synth64.yaml", "configs/infogan_synth64.yaml"
RUNS = (("vae_b256", VAE, 256, ()), ("vae_b256_compiled", VAE, 256, ("train.compile=reduce-overhead",)),
        ("vae_b256_noshuffle", VAE, 256, ("data.shuffle_buffer=0",)), ("vae_b1024", VAE, 1024, ()),
        ("vae", VAE, None, ()), ("infogan", INFOGAN, None, ()))
# GANs at a budget the CPU cannot give (bench/gan_samples.py on the GPU, judged by --judge): do BEGAN's blobs and
# the InfoGAN's grid artefacts go with more images? (name, config, epochs of the 9,600 train rows, score every)
GANS = (("gan_began", "configs/began_synth64.yaml", 30, 10), ("gan_infogan", INFOGAN, 30, 10))
STEPS = ("steps_vae", "steps_vae_compiled", "steps_infogan", *(f"train_{r[0]}" for r in RUNS), "serve_edit",
         *(g[0] for g in GANS), "process_start")
EDIT_ATTRIBUTES = ("Smiling", "Eyeglasses", "Male", "Bangs")


def make_shards(folder: Path, n: int) -> str:
    """64 px synthetic shards (reused when already there)."""
    from facegen.data.celeba import read_celeba
    from facegen.data.shards import write_shards
    from facegen.data.synth import write_synthetic

    shards = folder / f"shards64_{n}"
    if not (shards / "manifest.json").exists():
        raw = folder / f"synth_{n}"
        if not (raw / "list_attr_celeba.txt").exists():
            write_synthetic(str(raw), n=n, seed=0, layout="celeba", workers=os.cpu_count(), progress=False)
        write_shards(read_celeba(str(raw)), str(shards), resolution=64, progress=False, workers=os.cpu_count())
    return str(shards)


def train_run(name: str, config: str, batch: int | None, extra: tuple[str, ...], args, shards: str,
              device: torch.device) -> dict:
    from facegen.config import load_config
    from facegen.data.shards import read_manifest
    from facegen.training.trainer import fit

    manifest = read_manifest(shards)
    if args.cpu:  # the dry run's few faces hold no batch of 256, and CPU code generation needs a compiler
        batch = min(batch, 16) if batch else batch
        extra = tuple(x.replace("reduce-overhead", "eager-backend") for x in extra)
    probe = load_config(str(ROOT / config), [f"data.shards={shards}"] + ([f"data.batch_size={batch}"] if batch else []))
    rows = manifest.rows("train") // probe.data.batch_size * probe.data.batch_size
    epochs = max(2, math.ceil(args.images / rows))
    overrides = [f"data.shards={shards}", f"train.epochs={epochs}", "train.num_workers=1",
                 f"train.use_gpu={str(device.type == 'cuda').lower()}", f"train.cpus_per_worker={args.worker_cpus}",
                 f"train.storage_path={Path(args.work).resolve() / 'runs'}", f"train.name={name}",
                 "train.tracking=false",  # the figures are training's; MLflow's per-epoch writes are not
                 *([f"data.batch_size={batch}"] if batch else []), *extra]
    cfg = load_config(str(ROOT / config), overrides)
    shutil.rmtree(Path(args.work).resolve() / "runs" / name, ignore_errors=True)  # fresh, not resumed
    per_image = flops_per_image(cfg, device, manifest)
    started = time.perf_counter()
    result = fit(cfg)
    wall = time.perf_counter() - started
    steady = result.history[1:]
    seconds = sum(rows / h["train/images_per_s"] for h in steady)
    rate = rows * len(steady) / seconds
    waits = [h["train/data_wait_frac"] for h in steady if "train/data_wait_frac" in h]
    return {"config": config, "batch_size": cfg.data.batch_size, "epochs": epochs, "images": rows * epochs,
            "images_per_s": rate, "flops_per_image": per_image, "tflops_per_s": per_image * rate / 1e12,
            "data_wait_frac": sum(waits) / len(waits) if waits else None, "wall_s": wall,
            "overhead_s": wall - rows * epochs / rate, "bundle": result.bundle,
            "final": {k: v for k, v in result.history[-1].items() if k.startswith(("train/", "val/"))}}


def add_directions(bundle: str, shards: str) -> None:
    """Attribute directions, stored the way ``facegen analyze`` stores them (edits need them)."""
    from facegen.bundle import load_bundle, update_extras
    from facegen.data.pipeline import read_examples
    from facegen.data.shards import read_manifest
    from facegen.latent.store import directions_extras, fit_bundle_directions

    manifest = read_manifest(shards)
    model = load_bundle(bundle, map_location="cpu").model.eval()
    batch = read_examples(manifest, "train", 512)
    names = list(manifest.attribute_names)
    index = [names.index(n) for n in EDIT_ATTRIBUTES]
    found = fit_bundle_directions(model, {**batch, "attrs": batch["attrs"][:, index]}, list(EDIT_ATTRIBUTES))
    update_extras(bundle, directions_extras(found))


def serve_run(bundle: str, shards: str, args) -> dict:
    from ray import serve

    from bench.serve_load import sweep_http
    from serve.app import AppArgs, build_app

    add_directions(bundle, shards)
    port = 8000 + os.getpid() % 1000
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 120})
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        app = {"bundle": bundle, "max_batch_size": 32, "batch_wait_timeout_s": 0.005,
               "gpus_per_replica": args.gpus_per_replica}
        if "align" in AppArgs.model_fields:  # the load's flat-colour photos have no face to align
            app["align"] = False
        serve.run(build_app(app), name="facegen", route_prefix="/")
        ready = time.perf_counter() - started
        asyncio.run(sweep_http(url, "Smiling", 4, 16))  # warm-up: replicas, kernels, connections
        sweep = asyncio.run(sweep_http(url, "Smiling", args.concurrency, args.requests))
    finally:
        serve.shutdown()
    if sweep["failures"]:
        raise RuntimeError(f"{sweep['failures']} of {args.requests} edit requests failed: {sweep}")
    return {"gpus_per_replica": args.gpus_per_replica, "concurrency": args.concurrency,
            "requests": args.requests, "ready_s": ready, **sweep}


# What each kind of step costs on a GPU machine, roughly (first lent H200); a step that would not finish
# before --budget-s runs out is skipped, so the JSON is complete when the lease's command limit comes.
STEP_COST_S = {"steps": 30, "process": 60, "train": 150, "serve": 90, "steps_vae_compiled": 100, "gan": 240}


class Session:
    """The report of one run, written to ``path`` after every step, and the time left for steps."""

    def __init__(self, path: Path, budget_s: float | None, wanted: set[str], **facts) -> None:
        self.path, self.report, self.wanted = path, dict(facts), wanted
        self.deadline = time.perf_counter() + budget_s if budget_s else math.inf

    def step(self, key: str, fn, *fn_args):
        if key not in self.wanted and key != "data":
            return None
        started = time.perf_counter()
        cost = STEP_COST_S.get(key, STEP_COST_S.get(key.split("_")[0], 0))
        if started + cost > self.deadline:
            print(f"[gpu_bench] {key}: skipped, {self.deadline - started:.0f} s left of --budget-s", flush=True)
            self.report.setdefault("skipped", []).append(key)
            self.save()
            return None
        print(f"[gpu_bench] {key} ...", flush=True)
        try:
            self.report[key] = fn(*fn_args)
            print(f"[gpu_bench] {key}: {json.dumps(self.report[key], default=str)}", flush=True)
        except Exception as exc:  # one failure must not cost the other figures of a short GPU session
            traceback.print_exc()
            self.report.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
        self.report.setdefault("seconds", {})[key] = round(time.perf_counter() - started, 1)
        self.save()  # after every step: a lease that runs out keeps the figures measured so far
        return self.report.get(key)

    def save(self) -> None:
        from facegen.io import atomic_path

        with atomic_path(str(self.path)) as tmp:
            Path(tmp).write_text(json.dumps(self.report, indent=2, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "out/bench/gpu"))
    parser.add_argument("--work", default=None,
                        help="where the shards and training runs go (default: --out; on a lent GPU machine a local "
                             "folder keeps them out of the files sent back)")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on CPU: checks the script, not the GPU")
    parser.add_argument("--synth", type=int, default=None, help="synthetic faces (default 12000; --cpu 160)")
    parser.add_argument("--images", type=int, default=None,
                        help="training images per run, rounded up to whole epochs (default 24000; --cpu 64)")
    parser.add_argument("--only", default=None, help="comma-separated steps to run (default all): " + ", ".join(STEPS))
    parser.add_argument("--requests", type=int, default=None, help="edit requests (default 512; --cpu 16)")
    parser.add_argument("--concurrency", type=int, default=None, help="concurrent clients (default 32; --cpu 4)")
    parser.add_argument("--gpus-per-replica", type=float, default=None, help="default 0.25; --cpu 0")
    parser.add_argument("--judge", default=None,
                        help="an attribute classifier's bundle (the demo's classifier_synth64, 3 MB: carry it) to "
                             "judge the GANs' samples; without it the gan_* steps are left out")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds this may take: a step that would end later is skipped (default: no limit)")
    args = parser.parse_args()
    cpu = args.cpu
    args.synth = args.synth or (160 if cpu else 12000)
    args.images = args.images or (64 if cpu else 24000)
    args.requests = args.requests or (16 if cpu else 512)
    args.concurrency = args.concurrency or (4 if cpu else 32)
    args.gpus_per_replica = (0.0 if cpu else 0.25) if args.gpus_per_replica is None else args.gpus_per_replica
    args.worker_cpus = 0.5 if cpu else max(1, min(8, (os.cpu_count() or 2) // 2))  # the rest feed Ray Data
    wanted = set(args.only.split(",")) if args.only else set(STEPS)
    if wanted - set(STEPS):
        parser.error(f"--only: unknown steps {', '.join(sorted(wanted - set(STEPS)))} (choose from {', '.join(STEPS)})")
    if args.only and not args.judge and any(name.startswith("gan_") for name in wanted):
        parser.error("--only gan_*: the GANs' samples need --judge (an attribute classifier's bundle)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or args.out
    if not cpu and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device visible to torch (use --cpu for a dry run)")
    device = torch.device("cpu" if cpu else "cuda")

    import ray

    from facegen.runtime import init_ray

    session = Session(out / "gpu.json", args.budget_s, wanted, bench="gpu", mode="cpu" if cpu else "gpu",
                      torch=torch.__version__, ray=ray.__version__, host=platform.node(), cpus=os.cpu_count(),
                      device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
    report, step = session.report, session.step
    shards = step("data", make_shards, Path(args.work) / "data", args.synth)
    if shards:
        step("steps_vae", step_rates, VAE, (8, 32) if cpu else (32, 256, 1024), device, shards, 3 if cpu else 50)
        step("steps_vae_compiled", step_rates, VAE, (8,) if cpu else (32, 256), device, shards,
             3 if cpu else 50, "eager-backend" if cpu else "reduce-overhead")
        step("steps_infogan", step_rates, INFOGAN, (8, 32) if cpu else (64, 256), device, shards, 3 if cpu else 50)
        if any(key.startswith(("train_", "serve_")) for key in session.wanted):
            init_ray()
            try:
                for name, config, batch, extra in RUNS:
                    run = step(f"train_{name}", train_run, name, config, batch, extra, args, shards, device)
                    if run and config == VAE and "serve_edit" not in report:
                        step("serve_edit", serve_run, run["bundle"], shards, args)
            finally:
                ray.shutdown()
    for name, config, epochs, every in GANS:
        if shards and args.judge:
            step(name, gan_run, config, 1 if cpu else epochs, 1 if cpu else every, args, shards, device, out)
    step("process_start", process_start, device)
    session.save()
    print(f"[gpu_bench] wrote {out / 'gpu.json'}")
    for key, value in report.items():
        if key.startswith("train_"):
            wait = value["data_wait_frac"]
            print(f"  {key:<16} {value['images_per_s']:9.0f} img/s  {value['tflops_per_s']:7.3f} TFLOP/s  "
                  f"data wait {wait if wait is None else round(wait, 3)}  batch {value['batch_size']}")
    for key, value in report.items():
        if key.startswith("steps_"):
            rates = ", ".join(f"{k[6:]}: {v['images_per_s']:.0f} img/s ({v['ms_per_step']:.1f} ms)"
                              for k, v in value.items() if k.startswith("batch_"))
            print(f"  {key:<16} step alone, by batch: {rates}")
    for name, *_ in GANS:
        if name in report:
            last = report[name]["scores"][-1]
            print(f"  {name:<16} Fréchet {last['fd']:.0f} (floor {last['fd_floor']:.0f}) after "
                  f"{last['images']:,} images")
    if "serve_edit" in report:
        s = report["serve_edit"]
        print(f"  serve_edit       {s['rps']:9.1f} req/s  p50 {s['p50_ms']:.0f} ms  p99 {s['p99_ms']:.0f} ms  "
              f"failures {s['failures']}")
    if report.get("errors"):
        print(f"[gpu_bench] failed steps: {report['errors']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
