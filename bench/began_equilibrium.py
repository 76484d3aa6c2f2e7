"""Does BEGAN's equilibrium term engage? k_t, L(x), L(G(z)) and the judge's verdict on samples, per lambda_k.

    .venv/bin/python bench/began_equilibrium.py --shards out/demo_s4/shards64 \\
        --judge out/demo_prev/runs/judge_synth64/bundle --epochs 10 \
        --variants "paper:model.lambda_k=0.001,fast:model.lambda_k=0.05,fast-g0.8:model.lambda_k=0.05;model.gamma=0.8"

k_t+1 = clamp(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1) moves by lambda_k times a balance of a few hundredths
(L1 errors on the [0, 1] scale) per discriminator step. The paper's lambda_k = 0.001 assumes ~10^5 steps; a CPU
budget has ~10^3, where k_t can move by 10^-3 at most whatever the balance says; and k_t rises only once G's
fakes are reconstructed better than gamma times the real faces. This trains ``configs/began_synth64.yaml``
once per variant (``name:key=value;key=value``, config overrides) in-process (1 thread, same images in the same order and the same
initial weights, the harness's own ``train_one_epoch``) and prints, per epoch, the mean k_t, L(x), L(G(z)) and
the convergence measure M; at the end, 512 samples are scored like ``facegen evaluate`` scores generation
(judge-feature Fréchet distance against the test split, with its floor, and the attribute TV).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.vae_sharpness import epoch_batches  # noqa: E402
from facegen.config import load_config  # noqa: E402
from facegen.latent.grids import image_grid, save_png  # noqa: E402
from facegen.pretrained import build_for_training  # noqa: E402
from facegen.quality import sections  # noqa: E402
from facegen.quality.benchmark import load_data  # noqa: E402
from facegen.quality.judge import load_judge  # noqa: E402
from facegen.training.loop import make_optimizers, set_epoch_lr, train_one_epoch  # noqa: E402

SAMPLES = 512


def train_variant(name: str, overrides: list[str], args, train, data, judge, names, labels):
    cfg = load_config(args.config, [f"data.shards={args.shards}", *overrides, *args.set])
    torch.manual_seed(args.seed)
    model = build_for_training(cfg.model)  # as the harness builds it
    optimizers = make_optimizers(model, cfg)
    rows, started = [], time.perf_counter()
    for epoch in range(args.epochs):
        model.set_epoch(epoch)
        set_epoch_lr(optimizers, cfg, epoch)
        means, _, _ = train_one_epoch(model, model, optimizers,
                                      epoch_batches(train, cfg.data.batch_size, args.seed, epoch, cfg.data.hflip),
                                      torch.device("cpu"), contextlib.nullcontext())
        m = means.reduce()
        rows.append({"epoch": epoch + 1, "k_mean": m["k"], "k_end": float(model.k), "loss_real": m["loss_real"],
                     "loss_fake": m["loss_fake"], "M": m["M"], "seconds": round(time.perf_counter() - started)})
        print(f"{name:<12} epoch {epoch + 1:>3}  k mean {m['k']:.4f} end {float(model.k):.4f}  "
              f"L(x) {m['loss_real']:.4f}  L(G(z)) {m['loss_fake']:.4f}  M {m['M']:.4f}  "
              f"{rows[-1]['seconds']}s", flush=True)
    model.eval()
    samples, _ = sections.draw_samples(model, SAMPLES, args.seed, data.test, data.train)
    scored = sections.generation(judge, samples, data.test, data.train, labels, names, data.cache)
    picture = save_png(image_grid(samples[:64], nrow=8), f"{args.out}/samples_{name}.png")
    return {"variant": name, "overrides": overrides, "lambda_k": cfg.model.lambda_k, "gamma": cfg.model.gamma,
            "epochs": rows, "fd": scored["fd"], "fd_floor": scored["fd_floor"],
            "attribute_tv": scored.get("attribute_tv"), "attribute_tv_floor": scored.get("attribute_tv_floor"),
            "samples": picture}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", default="configs/began_synth64.yaml")
    parser.add_argument("--shards", required=True)
    parser.add_argument("--judge", required=True, help="the independent judge bundle (configs/judge_synth64.yaml)")
    parser.add_argument("--variants", default="paper:model.lambda_k=0.001,fast:model.lambda_k=0.05",
                        help="comma-separated NAME:key=value;key=value (config overrides per variant)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the train split per variant")
    parser.add_argument("--set", action="append", default=[], help="config override for every variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/bench/began_equilibrium")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    judge, data = load_judge(args.judge), load_data(args.shards, SAMPLES)
    labels = list(data.manifest.attribute_names)
    names = sections.judged_attributes(judge, labels, sections.label_matrix(data.test, labels, labels))
    from facegen.data.pipeline import read_examples

    train = read_examples(data.manifest, "train", 10**9)["image"]  # the whole train split, as the harness
    print(f"{args.config}: {len(train)} training images, {args.epochs} epochs per variant, seed {args.seed}")
    variants = [v.strip().partition(":") for v in args.variants.split(",")]
    results = [train_variant(name, [o for o in spec.split(";") if o], args, train, data, judge, names, labels)
               for name, _, spec in variants]
    print(f"\n| variant | lambda_k | gamma | k_t after {args.epochs} epochs | L(x) | L(G(z)) | M | Fréchet (floor) | attribute TV (floor) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        last = r["epochs"][-1]
        print(f"| {r['variant']} | {r['lambda_k']:g} | {r['gamma']:g} | {last['k_end']:.3f} | {last['loss_real']:.4f} | {last['loss_fake']:.4f} | "
              f"{last['M']:.4f} | {r['fd']:.0f} ({r['fd_floor']:.0f}) | {r['attribute_tv']:.3f} "
              f"({r['attribute_tv_floor']:.3f}) |")
    with open(f"{args.out}/results.json", "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
