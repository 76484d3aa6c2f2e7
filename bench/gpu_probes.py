"""The parts of a GPU session's figures that need no Ray (``bench/gpu_bench.py`` runs them): the training step
alone on a resident batch and its FLOPs, what a fresh process pays before its first step, and a GAN trained for
longer than a CPU allows with its samples judged (``bench/gan_samples.py``)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def step_rates(config: str, batches: tuple[int, ...], device: torch.device, shards: str, steps: int,
               compile_mode: str | None = None) -> dict:
    """The training step alone, no Ray and no input pipeline: one real batch resident on the device, stepped
    ``steps`` times through ``train_one_epoch`` after a warm-up. What the model and the GPU can do; the
    ``facegen train`` runs show how much of it the whole path keeps.

    compile_mode: the model's forward and backward through ``torch.compile`` with this mode (e.g.
    ``reduce-overhead``: CUDA graphs, against a launch-bound step), or ``eager-backend`` (Dynamo's tracing
    without code generation: what a CPU dry run can check); None: eager, as ``facegen train`` runs today."""
    from facegen.config import load_config
    from facegen.data.pipeline import read_examples
    from facegen.data.shards import read_manifest
    from facegen.pretrained import build_for_training
    from facegen.training.loop import compiled_step, make_optimizers, step_autocast, train_one_epoch

    manifest, out = read_manifest(shards), {}
    for size in batches:
        cfg = load_config(str(ROOT / config), [f"data.shards={shards}", f"data.batch_size={size}"])
        torch.manual_seed(0)
        model = build_for_training(cfg.model).to(device)
        optimizers = make_optimizers(model, cfg)
        stepped = compiled_step(model, compile_mode or "off")
        batch = {k: v.to(device) for k, v in read_examples(manifest, "train", size).items()}
        feed = lambda k: ({**batch, "corrupt_rows": torch.tensor(0)} for _ in range(k))  # noqa: E731
        warm = time.perf_counter()
        train_one_epoch(stepped, model, optimizers, feed(5 if compile_mode else 3), device,
                        step_autocast(cfg, device))  # warm-up (and compilation, CUDA graph capture)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        train_one_epoch(stepped, model, optimizers, feed(steps), device, step_autocast(cfg, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        out[f"batch_{size}"] = {"images_per_s": steps * size / seconds, "ms_per_step": 1e3 * seconds / steps,
                                "warm_up_s": started - warm}
    return {"config": config, "steps": steps, "compile_mode": compile_mode, **out}


def flops_per_image(cfg, device: torch.device, manifest) -> float:
    """FLOPs of one training step of every player (forward + backward) per image, at the per-worker batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from facegen.data.pipeline import read_examples
    from facegen.pretrained import build_for_training
    from facegen.training.loop import step_autocast

    n = cfg.data.batch_size // max(cfg.train.num_workers, 1)
    batch = {k: v.to(device) for k, v in read_examples(manifest, "train", n).items()}
    model = build_for_training(cfg.model).to(device).train()
    autocast = step_autocast(cfg, device)
    with FlopCounterMode(display=False) as counter:
        for player in model.players:
            model.zero_grad(set_to_none=True)
            with autocast:
                out = model(batch, player=player)
            out.loss.backward()
    return counter.get_total_flops() / batch["image"].shape[0]


PROCESS_START_CODE = r"""
import json, os, sys, time
t0 = time.perf_counter()
import torch
import torch.distributed as dist
gpu = sys.argv[1] == "cuda"
t1 = time.perf_counter()
if gpu:
    torch.cuda.init()
    torch.zeros(1, device="cuda")
t2 = time.perf_counter()
dist.init_process_group("nccl" if gpu else "gloo", init_method=f"tcp://127.0.0.1:{sys.argv[2]}", rank=0,
                        world_size=1)
t3 = time.perf_counter()
x = torch.ones(1, device="cuda" if gpu else "cpu")
dist.all_reduce(x)
if gpu:
    torch.cuda.synchronize()
t4 = time.perf_counter()
dist.destroy_process_group()
print("TIMES " + json.dumps({"import_torch_s": t1 - t0, "cuda_context_s": t2 - t1, "process_group_s": t3 - t2,
                             "first_all_reduce_s": t4 - t3}))
"""


def process_start(device: torch.device) -> dict:
    """What a fresh training process pays before its first step, outside Ray: importing torch, the CUDA
    context, a 1-process NCCL (gloo on CPU) group and its first all-reduce, NCCL's INFO lines kept. On the
    first lent H200 every Ray Train run spent 50-90 s before its first epoch ended (30 s on CPU)."""
    import subprocess

    env = {**os.environ, "NCCL_DEBUG": "INFO"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROCESS_START_CODE, device.type, str(29500 + os.getpid() % 1000)],
                          capture_output=True, text=True, timeout=180, env=env)
    line = next((x for x in done.stdout.splitlines() if x.startswith("TIMES ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr[-2000:]}")
    nccl = [x for x in (done.stdout + done.stderr).splitlines() if "NCCL" in x]
    return {**json.loads(line[6:]), "wall_s": time.perf_counter() - started, "nccl_lines": nccl[:40]}


def gan_run(config: str, epochs: int, every: int, args, shards: str, device: torch.device, out: Path) -> dict:
    """bench/gan_samples.py's config variant on ``device``: its per-epoch metrics and judged samples; the last
    sample grid is copied to ``out`` (the rest stays in ``args.work``: a lent machine sends back few files)."""
    import shutil
    import subprocess

    folder = Path(args.work) / "gan" / Path(config).stem
    command = [sys.executable, str(ROOT / "bench" / "gan_samples.py"), "--config", str(ROOT / config),
               "--shards", shards, "--judge", args.judge, "--epochs", str(epochs), "--score-every", str(every),
               "--variants", "config:", "--device", device.type, "--out", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    print(done.stdout[-3000:], flush=True)
    if done.returncode:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr[-2000:]}")
    result = json.loads((folder / "results.json").read_text())["results"][0]
    shutil.copy(folder / "samples_config.png", out / f"samples_{Path(config).stem}.png")
    return {"config": config, "epochs": result["epochs"], "scores": result["scores"]}
