"""Ex-post densities for an autoencoder's codes, side by side in one run: PCA + KDE against Gaussian mixtures.

Every sampler is fitted on the same training codes, draws the same number of samples, and is scored by the
judge exactly as ``facegen evaluate`` scores generation (Fréchet distance in the judge's features against the
test images, with its test-vs-train floor, and the attribute-frequency TV). Repeats over seeds give the spread.

    .venv/bin/python bench/samplers.py --bundle out/s4/runs/ae_long/bundle \
        --judge out/demo_prev/runs/judge_synth64/bundle --shards out/demo_s4/shards64 --fit-rows 4000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from facegen.bundle import load_bundle
from facegen.latent.mixture import GMMSampler
from facegen.latent.sampler import PCAKDESampler
from facegen.latent.scoring import batched
from facegen.quality import sections
from facegen.quality.benchmark import load_data
from facegen.quality.judge import BATCH, load_judge


def samplers(codes: torch.Tensor, seed: int) -> dict:
    fitted = {"pca_kde": PCAKDESampler.fit(codes, variance_share=0.95, seed=seed)}
    for k in (10, 20, 40, 80):
        fitted[f"gmm{k}"] = GMMSampler.fit(codes, n_components=k, variance_share=0.95, seed=seed)
    fitted["gmm20_share99"] = GMMSampler.fit(codes, n_components=20, variance_share=0.99, seed=seed)
    fitted["training_codes"] = _Replay(codes)  # no new faces: what the decoder alone scores
    return fitted


class _Replay:
    """Random training codes themselves: the reference a perfect density of the codes would reach."""

    def __init__(self, codes: torch.Tensor) -> None:
        self.codes = codes

    def sample(self, n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return self.codes[torch.randint(self.codes.shape[0], (n,), generator=generator)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--judge", required=True)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--n", type=int, default=512, help="test and floor images, and samples (evaluate's n)")
    parser.add_argument("--fit-rows", type=int, default=4000, help="training codes the densities are fitted on")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model, judge = load_bundle(args.bundle).model, load_judge(args.judge)
    data = load_data(args.shards, args.n)
    from facegen.data.pipeline import read_examples

    fit_images = read_examples(data.manifest, "train", args.fit_rows)["image"]
    codes = batched(model.encode, fit_images, BATCH)
    labels, names = list(data.manifest.attribute_names), None
    names = sections.judged_attributes(judge, labels, sections.label_matrix(data.test, labels, labels))
    rows: dict[str, list] = {}
    # The TV two real sets of these sizes score: the judge's readings of training images against test labels.
    real = sections.generation(judge, data.train["image"], data.test, data.train, labels, names, data.cache)
    print(f"training images as samples: FD {real['fd']:.1f}  TV {real['attribute_tv']:.4f}", file=sys.stderr)
    for seed in range(args.seeds):
        for name, sampler in samplers(codes, seed).items():
            start = time.time()
            samples = batched(model.decode, sampler.sample(args.n, seed), BATCH)
            g = sections.generation(judge, samples, data.test, data.train, labels, names, data.cache)
            rows.setdefault(name, []).append((g["fd"], g["attribute_tv"], g["fd_floor"], g["attribute_tv_floor"]))
            print(f"seed {seed} {name:8s} FD {g['fd']:7.1f} (floor {g['fd_floor']:.1f})  TV {g['attribute_tv']:.4f}"
                  f"  {time.time() - start:.1f}s", file=sys.stderr, flush=True)
    print(f"| sampler ({codes.shape[0]} training codes, {args.n} samples, {args.seeds} seeds) | FD | FD / floor | TV |")
    print("|---|---:|---:|---:|")
    summary = {}
    for name, values in rows.items():
        fd, tv, floor = (np.array([v[i] for v in values]) for i in range(3))
        summary[name] = {"fd": fd.tolist(), "tv": tv.tolist(), "fd_floor": float(floor[0])}
        print(f"| {name} | {fd.mean():.0f} ± {fd.std():.0f} | {fd.mean() / floor[0]:.2f} | "
              f"{tv.mean():.3f} ± {tv.std():.3f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
