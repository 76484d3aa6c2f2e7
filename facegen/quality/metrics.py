"""Image, distribution and label metrics: PSNR, SSIM, sharpness, Fréchet distance, attribute-frequency total variation,
balanced accuracy, judge agreement, categorical-code accuracy, within-one-bin accuracy, mean/spread over seeds.

Images are (N, 3, H, W) float in [-1, 1], measured on the [0, 1] scale (peak 1) in float64. Label-like inputs
(predictions, targets, codes, features) may be tensors or array-likes; per-attribute results are float64
numpy arrays (A,), summaries are Python floats.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


def _array(x, dtype=np.float64) -> np.ndarray:
    """A tensor or array-like as a numpy array (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _columns(x) -> np.ndarray:
    """Predictions or labels as (N, A): a single attribute (N,) becomes one column."""
    a = _array(x)
    return a[:, None] if a.ndim == 1 else a


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without numpy's warning) when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _unit_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"need two image batches (N, C, H, W) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    # float64: a tiny MSE or a closed-form check must not drown in float32 rounding.
    return (a.detach().cpu().double() + 1) / 2, (b.detach().cpu().double() + 1) / 2


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each pair of images (N, 3, H, W) in [-1, 1], on the [0, 1] scale: 10 log10(1 / MSE),
    (N,) float64; ``inf`` for an identical pair."""
    x, y = _unit_pair(a, b)
    mse = (x - y).pow(2).flatten(1).mean(1)  # (N,)
    return -10 * torch.log10(mse)  # log10(0) = -inf, so identical pairs give +inf


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of a set of image pairs (N, 3, H, W) in [-1, 1]: 10 log10(1 / MSE) with MSE pooled over the
    whole set (the mean of the per-image MSEs) on the [0, 1] scale.

    Pooled, not the mean of per-image PSNRs: that mean is ``inf`` as soon as one pair is identical and is led
    by the best-reconstructed images. The pooled value is finite unless every pair is identical (then ``inf``).
    :func:`psnr_per_image` gives the per-image values for those who want their mean.
    """
    x, y = _unit_pair(a, b)
    mse = float((x - y).pow(2).mean())  # one size for all images, so this is the mean per-image MSE
    return math.inf if mse == 0 else -10 * math.log10(mse)


def sharpness(a: torch.Tensor, b: torch.Tensor) -> float:
    """How much fine detail images ``a`` keep of their references ``b`` (N, 3, H, W) in [-1, 1]: the energy of
    a's Laplacian (4-neighbour, on the [0, 1] scale, inside the border) pooled over the set, divided by b's.
    1 = as much edge and texture energy as the references, below 1 = blurred (a decoder that averages), above
    1 = noisier than them; 0 for flat images. PSNR cannot tell a blur from a shift, this can: it ignores where
    the detail is."""
    x, y = _unit_pair(a, b)
    kernel = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64).expand(x.shape[1], 1, 3, 3)

    def energy(t: torch.Tensor) -> float:
        return float(F.conv2d(t, kernel.contiguous(), groups=t.shape[1]).pow(2).mean())

    reference = energy(y)
    return math.nan if reference == 0 else energy(x) / reference


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()  # (size,)


def ssim_per_image(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of each pair of images (N, 3, H, W) in [-1, 1]: (N,) float64,
    1 for an identical pair.

    The paper's settings: Gaussian window 11x11 with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1 (the
    [0, 1] scale). Local statistics use only windows that fit inside the image (no padding, as in the
    reference MATLAB code and skimage's cropped mean); the SSIM map is averaged over positions and channels.
    Needs H and W >= ``window``.
    """
    x, y = _unit_pair(a, b)
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM with a {window}-pixel window needs images at least that size, "
                         f"got {tuple(x.shape[-2:])}")
    channels = 5 * x.shape[1]
    g = _gaussian_1d(window, sigma)
    # The 2-D Gaussian window is the outer product g g^T: two 1-D passes (2 * window taps, not window^2),
    # over the five maps at once.
    maps = torch.cat([x, y, x * x, y * y, x * y], 1)  # (N, 5C, H, W)
    maps = F.conv2d(maps, g.view(1, 1, 1, window).expand(channels, 1, 1, window).contiguous(), groups=channels)
    maps = F.conv2d(maps, g.view(1, 1, window, 1).expand(channels, 1, window, 1).contiguous(), groups=channels)
    mu_x, mu_y, xx, yy, xy = maps.chunk(5, 1)  # each (N, C, H - window + 1, W - window + 1)

    c1, c2 = 0.01**2, 0.03**2
    var_x, var_y = xx - mu_x**2, yy - mu_y**2
    cov = xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the set of :func:`ssim_per_image` (standard 11x11, sigma 1.5 SSIM); 1.0 for identical sets."""
    return float(ssim_per_image(a, b).mean())


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(m)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), sample covariances with ddof 1. ~0 for identical
    sets; |m|^2 when one set is the other shifted by m.

    Report it as "Fréchet distance in <feature extractor> features". It is FID only for Inception-v3 pool3
    features of ~50k images; values from other features or sample sizes are not comparable (the estimate is
    biased upward for small N).

    tr (S_a S_b)^(1/2) is taken as tr (S_a^(1/2) S_b S_a^(1/2))^(1/2): the same eigenvalues, but of a symmetric
    PSD matrix, so ``eigh`` gives real ones (rounding negatives clipped to 0). No complex parts arise, and
    singular covariances (N <= D) need no jitter. The result is clipped at 0 against rounding.

    Wide features (D > min(N, M)) take the same value from the centred data instead of D x D matrices: with
    S_a = A^T A and S_b = B^T B (A = centred a / sqrt(N - 1)), the eigenvalues of S_a S_b are the squared
    singular values of A B^T (N, M), so tr (S_a S_b)^(1/2) is its nuclear norm; O(N M D) instead of O(D^3).
    """
    a, b = _array(feats_a), _array(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature sets (N, D) and (M, D) with N, M >= 2; got {a.shape} and {b.shape}")
    if a.shape[1] > min(len(a), len(b)):
        diff = a.mean(0) - b.mean(0)
        ca, cb = (a - a.mean(0)) / np.sqrt(len(a) - 1), (b - b.mean(0)) / np.sqrt(len(b) - 1)
        cross = np.linalg.svd(ca @ cb.T, compute_uv=False).sum()
        return max(float(diff @ diff + (ca * ca).sum() + (cb * cb).sum() - 2 * cross), 0.0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))  # (D, D)
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)  # (D,)
    return max(float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * cross), 0.0)


def attribute_tv_per_attribute(pred_a, pred_b) -> np.ndarray:
    """Per attribute, the total-variation distance between the attribute's frequency in two sets of binary
    values (N, A) and (M, A): |p_a - p_b| with p the column mean, (A,) in [0, 1].

    The TV distance between Bernoulli(p) and Bernoulli(q) is (|p - q| + |(1 - p) - (1 - q)|) / 2 = |p - q|.
    0/1 values give observed frequencies; probabilities give expected frequencies (threshold them first to
    compare how often a judge *says* present).
    """
    a, b = _columns(pred_a), _columns(pred_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two sets have {a.shape[1]} and {b.shape[1]} attributes")
    return np.abs(a.mean(0) - b.mean(0))


def attribute_tv(pred_a, pred_b) -> float:
    """Mean over attributes of :func:`attribute_tv_per_attribute`: 0 for equal frequencies, 1 when every
    attribute is always present in one set and always absent in the other."""
    return float(attribute_tv_per_attribute(pred_a, pred_b).mean())


def balanced_accuracy(pred, target, threshold: float = 0.5) -> tuple[np.ndarray, float]:
    """Balanced accuracy of binary multi-label predictions (N, A) (probabilities or 0/1; >= ``threshold`` is
    present) against 0/1 targets (N, A): per attribute (A,) the mean of the true-positive and true-negative
    rates, and their mean over attributes.

    An attribute whose targets hold only one class has no balanced accuracy (one rate is 0/0): it is NaN in
    the per-attribute array and left out of the mean, which is NaN only if no attribute has both classes.
    (sklearn instead falls back to the one defined rate, with a warning.)
    """
    p, t = _columns(pred) >= threshold, _columns(target) >= 0.5
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in shape")
    positives, negatives = t.sum(0), (~t).sum(0)  # (A,)
    both = (positives > 0) & (negatives > 0)
    tpr = (p & t).sum(0) / np.maximum(positives, 1)
    tnr = (~p & ~t).sum(0) / np.maximum(negatives, 1)
    per_attribute = np.where(both, (tpr + tnr) / 2, np.nan)
    return per_attribute, _nanmean(per_attribute)


def attribute_agreement(judge_acc_recon, judge_acc_orig) -> float:
    """How much of what a judge reads on originals survives reconstruction: its accuracy (e.g. mean balanced
    accuracy) on reconstructions divided by its accuracy on the originals. 1 = nothing lost; above 1 when
    reconstructions are easier to read. Per-attribute arrays are averaged first (NaN ignored), so this is a
    ratio of means; NaN when the originals' accuracy is 0 or NaN.
    """
    recon, orig = _nanmean(_array(judge_acc_recon).ravel()), _nanmean(_array(judge_acc_orig).ravel())
    return recon / orig if orig > 0 else math.nan  # NaN > 0 is False as well


def code_class_accuracy(codes, labels) -> float:
    """Accuracy of a categorical code read as a class after the best one-to-one assignment of code values to
    classes (Hungarian algorithm on the code x class count matrix, scipy's linear_sum_assignment).

    codes: (N,) int code values, or (N, K) scores or one-hots (argmax taken); labels: (N,) int classes, rows
    with a negative label (unlabelled) ignored. Values need not be contiguous, and #codes may differ from
    #classes: images of codes (or classes) left unassigned count as wrong, so a code that splits a class is
    penalised, as a one-to-one reading should. Random codes score about 1 / #classes (slightly more for small
    N: the assignment takes the luckiest matching). NaN when no row is labelled.
    """
    from scipy.optimize import linear_sum_assignment

    c = _array(codes)
    c = c.argmax(1) if c.ndim == 2 else c.astype(np.int64)  # (N,)
    y = _array(labels).astype(np.int64).ravel()
    if c.shape != y.shape:
        raise ValueError(f"codes give {c.shape[0]} rows, labels {y.shape[0]}")
    keep = y >= 0
    if not keep.any():
        return math.nan
    _, code_index = np.unique(c[keep], return_inverse=True)
    _, class_index = np.unique(y[keep], return_inverse=True)
    counts = np.zeros((code_index.max() + 1, class_index.max() + 1))  # (codes, classes)
    np.add.at(counts, (code_index, class_index), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / keep.sum())


def within_one_bin_accuracy(pred_bins, true_bins) -> float:
    """Fraction of predictions at most one ordinal bin from the truth (|pred - true| <= 1), for ordered bins
    such as age groups. Rows with a negative true bin (unlabelled) are ignored; NaN when none remain."""
    pred, true = _array(pred_bins).ravel(), _array(true_bins).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"pred_bins has {pred.size} rows, true_bins {true.size}")
    keep = true >= 0
    return float((np.abs(pred[keep] - true[keep]) <= 1).mean()) if keep.any() else math.nan


class Spread(NamedTuple):
    """One metric over several runs: mean, sample standard deviation (ddof 1; NaN for one run), min, max."""

    mean: float
    std: float
    min: float
    max: float


def mean_and_spread(values) -> Spread:
    """Mean, standard deviation (ddof 1), min and max of one metric over runs (e.g. seeds), for reporting
    ``mean ± std [min, max]``. NaN values propagate (drop undefined runs first); empty input is an error."""
    v = _array(values).ravel()
    if v.size == 0:
        raise ValueError("mean_and_spread needs at least one value")
    std = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return Spread(float(v.mean()), std, float(v.min()), float(v.max()))
