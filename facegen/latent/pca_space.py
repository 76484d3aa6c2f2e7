"""The whitened PCA space the code densities live in (:mod:`facegen.latent.sampler`, :mod:`facegen.latent.mixture`),
and how their fitted state is stored as named tensors in a bundle's extras."""

from __future__ import annotations

import numpy as np
import torch


def stored_tensors(state: dict[str, torch.Tensor], prefix: str, keys: tuple[str, ...], what: str) -> list[torch.Tensor]:
    """The tensors ``prefix/<key>`` of ``state`` in ``keys`` order, or a ValueError naming the missing ones."""
    missing = [f"{prefix}/{key}" for key in keys if f"{prefix}/{key}" not in state]
    if missing:
        raise ValueError(f"no {what} under {prefix!r} (missing {', '.join(missing)})")
    return [state[f"{prefix}/{key}"] for key in keys]


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).float()


def whitened_pca(codes: torch.Tensor | np.ndarray, variance_share: float):
    """(mean (D,), components (k, D), stds (k,), whitened coordinates (N, k), explained share) of codes (N, D),
    keeping the fewest leading components whose explained variance reaches ``variance_share``."""
    if not 0 < variance_share <= 1:
        raise ValueError(f"variance_share must be in (0, 1], got {variance_share}")
    x = np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"codes must be (N, D) with N >= 2, got shape {x.shape}")
    mean = x.mean(0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    variances = singular**2 / (x.shape[0] - 1)
    if variances.sum() <= 0:
        raise ValueError("codes have no variance: every code is the same")
    cumulative = np.cumsum(variances) / variances.sum()
    k = int(np.searchsorted(cumulative, variance_share - 1e-12) + 1)  # tolerance: share 1.0 after rounding
    stds = np.sqrt(variances[:k])
    return mean, vt[:k], stds, (x - mean) @ vt[:k].T / stds, float(cumulative[k - 1])
