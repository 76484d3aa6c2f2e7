"""Reconstruction losses and image-quality measures, selectable per family with
``recon_loss: mse|l1|ssim|perceptual`` (``perceptual`` mixes a frozen network's feature distance with one of
the pixel losses; see ``perceptual.py``).

All functions take images (N, 3, H, W) in [-1, 1] and return one value per image, shape (N,), so a family
can weight, sum or average them as its objective needs.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

PIXEL_LOSSES = ("mse", "l1", "ssim")
RECON_LOSSES = (*PIXEL_LOSSES, "perceptual")


def mse_per_image(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, on the [0, 1] pixel scale (the number people quote): (N,)."""
    return ((x_hat - x) / 2).pow(2).flatten(1).mean(1)


def l1_per_image(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image on the [0, 1] scale: (N,)."""
    return ((x_hat - x) / 2).abs().flatten(1).mean(1)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_per_image(x_hat: torch.Tensor, x: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image on the [0, 1] scale, averaged over channels: (N,).

    A 7-pixel Gaussian window rather than the paper's 11 suits 32-128 pixel faces.
    """
    a, b = (x_hat + 1) / 2, (x + 1) / 2
    channels = a.shape[1]
    w = _gaussian_window(window, sigma, channels, a.device, a.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1)


def reconstruction_loss(kind: str, x_hat: torch.Tensor, x: torch.Tensor,
                        perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The per-image loss named by ``kind`` (lower is better): (N,).

    ``perceptual`` is the model's ``perceptual.PerceptualLoss``, needed (only) for ``kind="perceptual"``.
    """
    if kind == "perceptual":
        if perceptual is None:
            raise ValueError("recon_loss perceptual: the model has no PerceptualLoss (model.recon_loss was not "
                             "perceptual when it was built)")
        return perceptual(x_hat, x)
    if kind == "mse":
        return mse_per_image(x_hat, x)
    if kind == "l1":
        return l1_per_image(x_hat, x)
    if kind == "ssim":
        return 1 - ssim_per_image(x_hat, x)
    raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {kind!r}")
