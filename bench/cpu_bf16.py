"""Training steps per second on CPU in fp32 and under bf16 autocast (``train.amp_cpu``), side by side.

    .venv/bin/python bench/cpu_bf16.py [--config configs/vae_demo64.yaml ...] [--threads 1] [--rounds 3]

For each config: its model (``build_for_training``, so a CVAE's constraint classifier is loaded) steps every
player on one worker's batch (``data.batch_size`` / ``train.num_workers`` images of the config's resolution),
in-process on ``--threads`` torch threads (a demo worker has one), with the loop's own step code
(``loop.train_one_epoch``) and its autocast (``loop.step_autocast``). The precisions alternate over ``--rounds``
rounds so that a shared machine's load spreads over both; each round times ``--steps`` steps after a warm-up.
Prints images/s per precision and the bf16 / fp32 ratio, and one JSON line. On a CPU without native bf16
(``facegen.precision.cpu_has_bf16``) ``amp_cpu`` is a no-op, and the ratio is about 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from facegen.config import load_config  # noqa: E402
from facegen.pretrained import build_for_training  # noqa: E402
from facegen.precision import cpu_has_bf16  # noqa: E402
from facegen.training.loop import step_autocast, make_optimizers, train_one_epoch  # noqa: E402

DEFAULT_CONFIGS = ("configs/vae_demo64.yaml", "configs/cvae_edit_demo64.yaml", "configs/classifier_synth64.yaml")
GUIDE = "out/demo/runs/guide_synth64/bundle"  # the demo editor's constraint reader, once make demo has run


def fixed_batch(cfg, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    res = cfg.model.resolution
    return {"image": torch.rand(n, 3, res, res, generator=g) * 2 - 1,
            "attrs": torch.randint(0, 2, (n, 40), generator=g).float(),
            "race": torch.randint(0, 7, (n,), generator=g), "age": torch.randint(0, 9, (n,), generator=g),
            "gender": torch.randint(0, 2, (n,), generator=g), "label": torch.full((n,), -1),
            "corrupt_rows": torch.tensor(0)}


def images_per_second(model, optimizers, cfg, batch, steps: int) -> float:
    autocast, device = step_autocast(cfg, torch.device("cpu")), torch.device("cpu")
    # Warm-up: oneDNN picks its kernels on the first steps of each shape and precision.
    train_one_epoch(model, model, optimizers, [dict(batch) for _ in range(2)], device, autocast)
    started = time.perf_counter()
    _, seen, _ = train_one_epoch(model, model, optimizers, [dict(batch) for _ in range(steps)], device, autocast)
    return seen / (time.perf_counter() - started)


def bench_config(path: str, args) -> dict:
    overrides = []
    if "cvae_edit" in path and not Path(GUIDE).exists():
        overrides.append("model.constraint.classifier_weight=0")  # no reader yet: the editor without its constraint
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = load_config(path, [*overrides, f"train.amp_cpu={precision == 'bf16'}"])
        torch.manual_seed(0)
        model = build_for_training(cfg.model)
        per_worker = max(1, cfg.data.batch_size // max(cfg.train.num_workers, 1))
        runs[precision] = (model, make_optimizers(model, cfg), cfg, fixed_batch(cfg, per_worker))
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for precision, run in runs.items():
            rates[precision].append(images_per_second(*run, args.steps))
    best = {k: max(v) for k, v in rates.items()}  # the least disturbed round of each
    return {"config": path, "batch": runs["fp32"][3]["image"].shape[0], "fp32_img_s": round(best["fp32"], 1),
            "bf16_img_s": round(best["bf16"], 1), "ratio": round(best["bf16"] / best["fp32"], 3),
            "constraint": not overrides}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", help=f"experiment YAML (repeatable; default {DEFAULT_CONFIGS})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a demo worker has 1; default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per precision (default 3)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round (default 8)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU bf16 native: {cpu_has_bf16()}; {args.threads} thread(s); {os.cpu_count()} cores", flush=True)
    rows = [bench_config(path, args) for path in args.config or DEFAULT_CONFIGS]
    print(f"{'config':<36} {'batch':>5} {'fp32 img/s':>10} {'bf16 img/s':>10} {'ratio':>6}")
    for row in rows:
        print(f"{row['config']:<36} {row['batch']:5d} {row['fp32_img_s']:10.1f} {row['bf16_img_s']:10.1f} "
              f"{row['ratio']:6.2f}")
    print(json.dumps({"cpu_bf16_native": cpu_has_bf16(), "threads": args.threads, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
