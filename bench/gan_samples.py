"""Do a GAN's samples become faces? Variants of one GAN config trained side by side, their samples judged.

    .venv/bin/python bench/gan_samples.py --config configs/infogan_synth64.yaml --shards out/demo/shards64 \\
        --judge out/demo/runs/classifier_synth64/bundle --epochs 20 --score-every 5 \\
        --variants "now:,diffaug:model.diff_augment=color;translation;cutout,ema:model.generator_ema=0.999"

Each variant (``name:key=value;key=value``, config overrides; a list value joins its items with ``+``) is
trained in-process on one thread (or ``--device cuda``) with the harness's own ``train_one_epoch`` and autocast
(bf16 on a GPU, or on a CPU that has it, as ``train.amp_cpu`` says): the same images in the same order, the
same initial weights. Every ``--score-every`` epochs and at the end, 512 samples are scored as ``facegen
evaluate`` scores generation: the judge-feature Fréchet distance against the test split (with its floor, two
real sets of these sizes) and the attribute-frequency TV; each variant's last sample grid is written to
OUT/samples_<name>.png. With
``model.generator_ema`` both the averaged generator and the last one are judged (the same run). Per epoch it
prints the training metrics' means (BEGAN: k_t, L(x), L(G(z)), M; InfoGAN: the players' losses and D's
accuracies).

BEGAN's equilibrium, measured with this harness: k_t+1 = clamp(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1)
moves by lambda_k times a balance of a few hundredths per discriminator step. The paper's lambda_k = 0.001
assumes ~10^5 steps; a CPU budget has ~10^3 (``configs/began_synth64.yaml``'s comment has the side-by-side).
"""

from __future__ import annotations

import argparse
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
from facegen.training.loop import make_optimizers, set_epoch_lr, step_autocast, train_one_epoch  # noqa: E402

SAMPLES = 512
SHOWN = ("k", "loss_real", "loss_fake", "M", "g_loss", "d_loss", "d_real_acc", "d_fake_acc", "code_acc")


def score(model, name: str, args, data, judge, names, labels) -> dict:
    """The judge's verdict on 512 of the model's samples; the grid is written beside the results."""
    model.eval()
    samples, _ = sections.draw_samples(model, SAMPLES, args.seed, data.test, data.train)
    scored = sections.generation(judge, samples, data.test, data.train, labels, names, data.cache)
    grid = save_png(image_grid(samples[:64], nrow=8), f"{args.out}/samples_{name}.png")
    return {"fd": scored["fd"], "fd_floor": scored["fd_floor"], "attribute_tv": scored.get("attribute_tv"),
            "attribute_tv_floor": scored.get("attribute_tv_floor"), "samples": grid}


def train_variant(name: str, overrides: list[str], args, train, data, judge, names, labels) -> dict:
    cfg = load_config(args.config, [f"data.shards={args.shards}", *overrides, *args.set])
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = build_for_training(cfg.model).to(device)  # as the harness builds it
    optimizers = make_optimizers(model, cfg)
    autocast = step_autocast(cfg, device)
    rows, scores, started = [], [], time.perf_counter()
    for epoch in range(args.epochs):
        model.set_epoch(epoch)
        set_epoch_lr(optimizers, cfg, epoch)
        batches = epoch_batches(train, cfg.data.batch_size, args.seed, epoch, cfg.data.hflip)
        means, seen, _ = train_one_epoch(model, model, optimizers, batches, device, autocast)
        m = means.reduce()
        rows.append({"epoch": epoch + 1, **{k: m[k] for k in SHOWN if k in m},
                     "seconds": round(time.perf_counter() - started)})
        shown = "  ".join(f"{k} {m[k]:.4f}" for k in SHOWN if k in m)
        print(f"{name:<12} epoch {epoch + 1:>3}  {shown}  {rows[-1]['seconds']}s", flush=True)
        if epoch + 1 == args.epochs or (args.score_every and (epoch + 1) % args.score_every == 0):
            model.cpu()  # the judge and the test images live on the CPU; the optimizers keep the same tensors
            scores.append({"epoch": epoch + 1, "images": (epoch + 1) * seen,
                           **score(model, name, args, data, judge, names, labels)})
            average, live = getattr(model, "generator_average", None), {}
            if average is not None:  # the same run's last generator, beside its running average
                model.generator_average = None
                live = {f"live_{k}": v for k, v in score(model, f"{name}-live", args, data, judge, names,
                                                         labels).items()}
                model.generator_average = average
                scores[-1].update(live)
            print(f"{name:<12} epoch {epoch + 1:>3}  Fréchet {scores[-1]['fd']:.0f} (floor "
                  f"{scores[-1]['fd_floor']:.0f})  attribute TV {scores[-1]['attribute_tv']:.3f}"
                  + (f"  last generator: {live['live_fd']:.0f}, {live['live_attribute_tv']:.3f}" if live else ""),
                  flush=True)
            model.to(device)
    return {"variant": name, "overrides": overrides, "epochs": rows, "scores": scores,
            "train_seconds": rows[-1]["seconds"], **scores[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", default="configs/infogan_synth64.yaml", help="the GAN config of every variant")
    parser.add_argument("--shards", required=True, help="a shard folder (facegen prepare) of 64 px faces")
    parser.add_argument("--judge", required=True, help="the independent judge bundle (configs/judge_synth64.yaml)")
    parser.add_argument("--variants", default="now:",
                        help="comma-separated NAME:key=value;key=value (config overrides per variant)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the train split per variant")
    parser.add_argument("--score-every", type=int, default=0, help="also judge samples every N epochs (0: at the end)")
    parser.add_argument("--set", action="append", default=[], help="config override for every variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the variants train (cpu, cuda); samples are judged on "
                                                         "the CPU")
    parser.add_argument("--out", default="out/bench/gan_samples", help="results.json and the sample grids")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible to torch")
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    judge, data = load_judge(args.judge), load_data(args.shards, SAMPLES)
    labels = list(data.manifest.attribute_names)
    names = sections.judged_attributes(judge, labels, sections.label_matrix(data.test, labels, labels))
    from facegen.data.pipeline import read_examples

    train = read_examples(data.manifest, "train", 10**9)["image"]  # the whole train split, as the harness
    print(f"{args.config}: {len(train)} training images, {args.epochs} epochs per variant, seed {args.seed}")
    variants = [v.strip().partition(":") for v in args.variants.split(",")]
    results = []
    for name, _, spec in variants:
        overrides = [o.replace("+", ",") for o in spec.split(";") if o]
        results.append(train_variant(name, overrides, args, train, data, judge, names, labels))
        with open(f"{args.out}/results.json", "w") as f:  # after every variant: a long run keeps what it has
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    print(f"\n| variant | overrides | train s | Fréchet (floor) | attribute TV (floor) |\n|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['variant']} | {' '.join(r['overrides']) or '-'} | {r['train_seconds']} | {r['fd']:.0f} "
              f"({r['fd_floor']:.0f}) | {r['attribute_tv']:.3f} ({r['attribute_tv_floor']:.3f}) |")
        if "live_fd" in r:
            print(f"| {r['variant']}, last generator | | | {r['live_fd']:.0f} | {r['live_attribute_tv']:.3f} |")
    return 0


if __name__ == "__main__":
    from facegen.errors import FacegenError

    try:
        sys.exit(main())
    except FacegenError as exc:  # a missing bundle or shard folder, a bad override: one line, not a traceback
        sys.exit(f"error: {exc}")
