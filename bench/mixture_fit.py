"""The ex-post Gaussian mixture's fit, side by side in one run: scikit-learn's ``GaussianMixture`` against
facegen's batched torch EM (:mod:`facegen.latent.em`, the same algorithm), alternated, on a bundle's own
training codes in the same whitened PCA space ``GMMSampler.fit`` uses. Prints seconds per fit, EM iterations and
the largest difference between the two fits' parameters. Run it on a quiet machine: on a busy one, threads that
wait for a core make either side several times slower (``--threads 1`` is the least sensitive).

    .venv/bin/python bench/mixture_fit.py --bundle out/demo/runs/cvae_edit_demo64/bundle --fit-rows 4000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from facegen.bundle import load_bundle  # noqa: E402
from facegen.data.pipeline import read_examples  # noqa: E402
from facegen.data.shards import read_manifest  # noqa: E402
from facegen.latent.em import fit_gaussian_mixture  # noqa: E402
from facegen.latent.pca_space import whitened_pca  # noqa: E402
from facegen.latent.store import encode_batch  # noqa: E402


def fit_sklearn(points: np.ndarray, modes: int, reg_covar: float, seed: int):
    from sklearn.mixture import GaussianMixture

    mixture = GaussianMixture(modes, covariance_type="full", reg_covar=reg_covar, max_iter=300,
                              random_state=seed).fit(points)
    return mixture.weights_, mixture.means_, np.linalg.cholesky(mixture.covariances_), mixture.n_iter_


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="an autoencoder bundle (its data.shards give the codes)")
    parser.add_argument("--shards", default=None, help="default: the bundle's data.shards")
    parser.add_argument("--fit-rows", type=int, default=4000, help="training codes (facegen evaluate's --fit-n)")
    parser.add_argument("--modes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's BLAS and scikit-learn's OpenMP too, so both sides get the same
    bundle = load_bundle(args.bundle)
    rows = read_examples(read_manifest(args.shards or bundle.config.data.shards), "train", args.fit_rows)
    with torch.no_grad():
        codes = encode_batch(bundle.model, rows)
    _, _, _, points, explained = whitened_pca(codes, 0.95)
    modes = max(1, min(args.modes, points.shape[0] // 10))
    print(f"{points.shape[0]} codes of {codes.shape[1]} dims -> {points.shape[1]} components ({explained:.0%}), "
          f"{modes} modes, {args.threads} threads")
    seconds: dict[str, list[float]] = {"scikit-learn": [], "torch EM": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        *reference, iterations = fit_sklearn(points, modes, 1e-3, 0)
        seconds["scikit-learn"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ours = fit_gaussian_mixture(points, modes, reg_covar=1e-3, max_iter=300, seed=0)
        seconds["torch EM"].append(time.perf_counter() - start)
    for name, values in seconds.items():
        print(f"{name:13s} " + " / ".join(f"{v:.2f}" for v in values) + " s")
    ratio = np.median(seconds["scikit-learn"]) / np.median(seconds["torch EM"])
    gap = max(float(np.abs(a - b).max()) for a, b in zip(ours, reference))
    print(f"speed-up {ratio:.1f}x; scikit-learn's EM iterations {iterations}; largest parameter difference {gap:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
