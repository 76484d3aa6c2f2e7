"""Why are the demo VAE's faces blurred, and what fixes it? Decoder likelihoods and widths, measured in one run.

    python bench/vae_sharpness.py [--variants before,std0.1,calibrated,calibrated-wide] \\
        [--minutes-per-variant 9] [--images 0] [--eval-epochs 10] [--out out/bench/vae_sharpness] [--seed 0]

A VAE's Gaussian decoder with a fixed ``decoder_std`` weighs the reconstruction against the KL term by
``1 / decoder_std**2``: with 0.25, far above the error the network could reach, the KL wins and the decoder
learns the blurred average face of each neighbourhood. ``decoder_std: 0`` calibrates sigma to each batch's error
(sigma-VAE, see ``facegen/models/vae.py``). This trains every variant of ``--config`` in-process (no Ray, one
thread, the harness's own ``train_one_epoch``, bf16 autocast where a variant sets ``train.amp_cpu``) on the same
images in the same order (same seed, same per-epoch shuffle and flips), one variant after the other, each until
``--minutes-per-variant`` or ``--images`` (whichever comes first), and every ``--eval-epochs`` epochs and at the
end measures on the test split:

PSNR      posterior-mean reconstructions vs originals, 10 log10(1 / MSE) with the MSE pooled over the test set
          ([0, 1] scale; ``facegen.quality.metrics.psnr``);
PSNR5     the mean of PSNR measured after each of the last 5 epochs: one snapshot's PSNR moves by up to ~0.7 dB
          within a few steps (Adam at a constant learning rate), so compare variants by this column;
SSIM      the standard 11x11 SSIM (``facegen.quality.metrics.ssim``);
KL        KL(q(z|x) || N(0, I)) per test image, nats;
active    latent dimensions whose posterior mean varies over the test set (variance > 0.01);
kl90      the fewest latent dimensions that hold 90% of the KL (how concentrated the information is);
agree     with ``--judge``: the judge's balanced accuracy on reconstructions over that on the originals
          (attribute agreement, as ``facegen evaluate`` measures it; nan without a judge);
prior_gap KL(moment-matched Gaussian of the aggregate posterior || N(0, I)), nats: how far the codes the
          decoder was trained on are from the prior that samples are drawn from (near 0: prior samples land
          where reconstructions do; large: many prior samples land where the decoder never learned to draw).

An epoch is what a Ray Train epoch of the demo is: the train split in batches of ``data.batch_size``, the last
partial batch dropped (2368 of the 2400 images), so ``epochs`` here count like the config's ``train.epochs``
(with the default ``--eval-epochs 10`` the first row of each variant is the demo's budget). Wall time is
training only, on this machine, as loaded as it was; ``images`` is the budget that does not depend on load.
For each variant and measurement it writes ``OUT/<variant>_e<epochs>.png``: 16 test faces over their
reconstructions (rows 1-4) and 32 prior samples (rows 5-8; the same z for every variant), so a person can
judge whether samples are still faces. Results also go to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from facegen.config import load_config  # noqa: E402
from facegen.data.pipeline import read_examples  # noqa: E402
from facegen.data.shards import read_manifest  # noqa: E402
from facegen.latent.grids import image_grid, save_png  # noqa: E402
from facegen.latent.sampler import fit_sampler, sample_faces  # noqa: E402
from facegen.models.losses import gaussian_kl  # noqa: E402
from facegen.pretrained import build_for_training  # noqa: E402
from facegen.quality.metrics import psnr, ssim  # noqa: E402
from facegen.training.loop import (epoch_seed, make_optimizers, set_epoch_lr, step_autocast,  # noqa: E402
                                   train_one_epoch)

# Widths pinned with no residual decoder blocks, so a row means the same whatever --config sets.
NARROW = ["model.base_channels=16", "model.max_channels=128", "model.decoder_res_blocks=0"]
WIDE = ["model.base_channels=32", "model.max_channels=256", "model.decoder_res_blocks=0"]
BEFORE = ["model.latent_dim=64", "model.beta=1.0", "model.kl_warmup_epochs=2", "data.batch_size=64", "train.lr=0.001"]
VARIANTS = {
    "before": ["model.decoder_std=0.25", *NARROW, *BEFORE],  # configs/vae_synth64.yaml before this bench
    "std0.25": ["model.decoder_std=0.25", *NARROW],
    "std0.1": ["model.decoder_std=0.1", *NARROW],
    "std0.05": ["model.decoder_std=0.05", *NARROW],
    "calibrated": ["model.decoder_std=0", *NARROW],
    "calibrated-nowarmup": ["model.decoder_std=0", "model.kl_warmup_epochs=0", *NARROW],
    "calibrated-w24": ["model.decoder_std=0", "model.base_channels=24", "model.max_channels=192",
                       "model.decoder_res_blocks=0"],
    "calibrated-wide": ["model.decoder_std=0", *WIDE],
}
DEFAULT_VARIANTS = "before,std0.1,calibrated,calibrated-wide"
ACTIVE_VARIANCE = 0.01
SAMPLES = 32


def epoch_batches(images: torch.Tensor, batch_size: int, seed: int, epoch: int, hflip: bool):
    """One epoch of training batches: a shuffle and flips that depend on (seed, epoch) only, so every variant
    sees the same images in the same order; the last partial batch is dropped, as the harness does."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(images), generator=generator)
    flips = torch.rand(len(images), generator=generator) < 0.5
    for start in range(0, len(images) - batch_size + 1, batch_size):
        rows = order[start:start + batch_size]
        batch = images[rows]  # a copy: flipping it leaves the data alone
        if hflip:
            flip = flips[rows]
            batch[flip] = batch[flip].flip(-1)
        yield {"image": batch, "corrupt_rows": torch.tensor(0)}


@torch.no_grad()
def measure(model, test: torch.Tensor, batch_size: int = 100) -> dict[str, float]:
    """PSNR, SSIM, KL per image, active dimensions and prior gap on ``test`` (see the module docstring); a
    deterministic autoencoder (no ``posterior``) gets PSNR, SSIM and active dimensions of its codes only."""
    model.eval()
    if not hasattr(model, "posterior"):
        codes = torch.cat([model.encode(test[i:i + batch_size]) for i in range(0, len(test), batch_size)])
        recon = torch.cat([model.decode(codes[i:i + batch_size]) for i in range(0, len(codes), batch_size)])
        nan = float("nan")
        return {"psnr": psnr(recon, test), "ssim": ssim(recon, test), "kl": nan,
                "active": int((codes.var(0) > ACTIVE_VARIANCE).sum()), "kl90": -1, "prior_gap": nan}
    mus, logvars, recons = [], [], []
    for start in range(0, len(test), batch_size):
        mu, logvar = model.posterior(test[start:start + batch_size])
        mus.append(mu)
        logvars.append(logvar)
        recons.append(model.decode(mu))
    mu, logvar, recon = torch.cat(mus), torch.cat(logvars), torch.cat(recons)
    mu64 = mu.double()
    mean = mu64.mean(0)
    cov = torch.cov(mu64.T) + torch.diag(logvar.double().exp().mean(0))  # moments of the aggregate posterior
    prior_gap = 0.5 * (cov.trace() + mean @ mean - mean.numel() - torch.logdet(cov))
    kl_per_dim = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(0).sort(descending=True).values
    kl90 = int((kl_per_dim.cumsum(0) < 0.9 * kl_per_dim.sum()).sum()) + 1
    return {"psnr": psnr(recon, test), "ssim": ssim(recon, test), "kl": float(gaussian_kl(mu, logvar).mean()),
            "active": int((mu.var(0) > ACTIVE_VARIANCE).sum()), "kl90": kl90, "prior_gap": float(prior_gap)}


@torch.no_grad()
def test_psnr(model, test: torch.Tensor, batch_size: int = 100) -> float:
    model.eval()
    recon = torch.cat([model.decode(model.encode(test[i:i + batch_size])) for i in range(0, len(test), batch_size)])
    return psnr(recon, test)


@torch.no_grad()
def picture(model, test: torch.Tensor, seed: int, path: str) -> str:
    """16 test faces over their reconstructions, then 32 prior samples (z drawn from ``seed``; a model without
    a prior draws from a PCA + KDE density of the test codes instead)."""
    model.eval()
    faces = test[:16]
    recon = model.decode(model.encode(faces))
    if model.needs_fitted_sampler:
        samples = sample_faces(model, fit_sampler(model, test), SAMPLES, seed)
    else:
        samples = model.sample(SAMPLES, generator=torch.Generator().manual_seed(seed))
    rows = [faces[:8], recon[:8], faces[8:], recon[8:], samples]
    return save_png(image_grid(torch.cat(rows), nrow=8), path)


def train_variant(name: str, overrides: list[str], args, train: torch.Tensor, test: torch.Tensor):
    """Trains one variant; yields a result dict every ``--eval-epochs`` epochs and at the end."""
    cfg = load_config(args.config, [f"data.shards={args.shards}", *overrides, *args.set])
    torch.manual_seed(args.seed)
    model = build_for_training(cfg.model)  # as the harness: feature nets and backbones loaded
    optimizers = make_optimizers(model, cfg)
    batch_size = cfg.data.batch_size
    per_epoch = len(train) // batch_size * batch_size
    budget_s = args.minutes_per_variant * 60
    seen, train_s, epoch, measured_at = 0, 0.0, 0, -1
    recent, psnr_at = [], -1  # PSNR after each of the last 5 epochs

    def spent() -> bool:
        return bool(args.images and seen >= args.images)

    while True:
        model.set_epoch(epoch)
        set_epoch_lr(optimizers, cfg, epoch)  # train.lr_schedule, as the Ray Train loop sets it
        torch.manual_seed(epoch_seed(args.seed, epoch, 0))  # the loop's reparameterisation noise
        started = time.perf_counter()

        def budgeted(batches):
            """Stops inside an epoch once the budget is spent: the budget, not the epoch, is compared."""
            nonlocal seen
            for batch in batches:
                if spent() or train_s + time.perf_counter() - started >= budget_s:
                    return
                seen += batch_size
                yield batch

        means, _, _ = train_one_epoch(model, model, optimizers,
                                      budgeted(epoch_batches(train, batch_size, args.seed, epoch, cfg.data.hflip)),
                                      torch.device("cpu"), step_autocast(cfg, torch.device("cpu")))
        train_s += time.perf_counter() - started
        epoch += 1
        if seen != psnr_at:
            recent, psnr_at = (recent + [test_psnr(model, test)])[-5:], seen
        done = spent() or train_s >= budget_s or seen < epoch * per_epoch
        if (done or epoch % args.eval_epochs == 0) and seen != measured_at:
            measured_at = seen
            epochs = seen / per_epoch
            metrics = means.reduce()
            if args.save_weights:
                torch.save({"config": cfg.to_dict(), "model": model.state_dict()},
                           f"{args.out}/{name}_e{round(epochs, 1):g}.pt")
            yield {"variant": name, "epochs": round(epochs, 2), "images": seen, "train_s": round(train_s, 1),
                   **measure(model, test), "agree": args.agreement(model) if args.agreement else float("nan"),
                   "psnr5": sum(recent) / len(recent), "train_loss": metrics.get("loss"),
                   "train_decoder_std": metrics.get("decoder_std"), "overrides": overrides,
                   "png": picture(model, test, args.seed, f"{args.out}/{name}_e{round(epochs, 1):g}.png")}
        if done:
            return


ROW = ("{variant:<22}{epochs:>7.1f}{images:>9}{train_s:>9.0f}{psnr:>8.2f}{psnr5:>7.2f}{ssim:>7.3f}{agree:>7.3f}"
       "{kl:>8.1f}{active:>7}{kl90:>6}{prior_gap:>10.1f}")
HEADER = (f"{'variant':<22}{'epochs':>7}{'images':>9}{'train_s':>9}{'PSNR':>8}{'PSNR5':>7}{'SSIM':>7}{'agree':>7}"
          f"{'KL':>8}{'active':>7}{'kl90':>6}{'prior_gap':>10}")


def agreement_of(judge_location: str, manifest, test_batch: dict):
    """model -> the judge's attribute agreement of its reconstructions of ``test_batch`` (see ``agree``)."""
    from facegen.quality import sections
    from facegen.quality.judge import load_judge
    from facegen.quality.metrics import attribute_agreement, balanced_accuracy

    judge, labels = load_judge(judge_location), list(manifest.attribute_names)
    names = sections.judged_attributes(judge, labels, test_batch["attrs"])
    truth = sections.label_matrix(test_batch, labels, names)
    per_original, _ = balanced_accuracy(sections.judge_reading(judge, test_batch["image"], names), truth)

    def agreement(model) -> float:
        model.eval()
        recon = sections.reconstruct(model, test_batch)
        per_recon, _ = balanced_accuracy(sections.judge_reading(judge, recon, names), truth)
        return attribute_agreement(per_recon, per_original)
    return agreement


def parse_variants(spec: str) -> dict[str, list[str]]:
    """``name,name,NAME:key=v;key=v`` -> {name: overrides}; names come from :data:`VARIANTS`."""
    variants: dict[str, list[str]] = {}
    for item in spec.split(","):
        name, _, custom = item.partition(":")
        if custom:
            variants[name] = custom.split(";")
        elif name in VARIANTS:
            variants[name] = VARIANTS[name]
        else:
            raise ValueError(f"unknown variant {name!r} (have {', '.join(VARIANTS)}; or NAME:key=v;key=v)")
    return variants


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="variants:\n" + "\n".join(f"  {k:<20} {' '.join(v)}" for k, v in VARIANTS.items()))
    parser.add_argument("--config", default="configs/vae_synth64.yaml", help="base config (default %(default)s)")
    parser.add_argument("--shards", default="out/demo/shards64", help="64x64 shards (default %(default)s)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help="comma-separated names from the list below, or NAME:key=v;key=v for an ad hoc one "
                             "(default %(default)s)")
    parser.add_argument("--minutes-per-variant", type=float, default=9.0,
                        help="training wall-clock budget of each variant (default %(default)s)")
    parser.add_argument("--images", type=int, default=0,
                        help="also stop each variant after this many training images (default 0: time only)")
    parser.add_argument("--eval-epochs", type=int, default=10,
                        help="measure and draw every this many epochs, besides at the end (default %(default)s: "
                             "the demo's train.epochs)")
    parser.add_argument("--set", action="append", default=[], help="config override for every variant (repeatable)")
    parser.add_argument("--out", default="out/bench/vae_sharpness", help="folder for PNGs and results.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data order and noise (default 0)")
    parser.add_argument("--save-weights", action="store_true",
                        help="also save each measured model as OUT/<variant>_e<epochs>.pt (config and state_dict)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--judge", default=None, metavar="BUNDLE",
                        help="an independent judge bundle (configs/judge_synth64.yaml): adds attribute agreement")
    args = parser.parse_args()
    try:
        variants = parse_variants(args.variants)
    except ValueError as e:
        parser.error(str(e))
    torch.set_num_threads(args.threads)

    os.makedirs(args.out, exist_ok=True)
    manifest = read_manifest(args.shards)
    train = read_examples(manifest, "train", 1_000_000)["image"]
    test_batch = read_examples(manifest, "test", 1_000_000)
    test = test_batch["image"]
    args.agreement = agreement_of(args.judge, manifest, test_batch) if args.judge else None
    budget = f"{args.minutes_per_variant:g} min" + (f" or {args.images} images" if args.images else "")
    print(f"{args.config} {' '.join(args.set)}: {len(train)} train / {len(test)} test images, "
          f"{args.threads} thread(s), {budget} per variant, seed {args.seed}\n", flush=True)
    print(HEADER, flush=True)
    results = []
    for name, overrides in variants.items():
        for result in train_variant(name, overrides, args, train, test):
            results.append(result)
            print(ROW.format(**result), flush=True)
            with open(f"{args.out}/results.json", "w") as f:  # after every row: a stopped run keeps its rows
                json.dump({"command": " ".join(sys.argv), "threads": args.threads, "results": results}, f, indent=2)
    print(f"\n{HEADER}")
    for result in sorted(results, key=lambda r: (r["epochs"], r["variant"])):
        print(ROW.format(**result))
    print(f"\npictures and results.json in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
