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


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 if autocast made it bf16 or fp16, else as it is (fp64 stays fp64): losses and their means
    are taken at full precision whatever precision the network ran in."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def mse_per_image(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, on the [0, 1] pixel scale (the number people quote): (N,)."""
    return ((full_precision(x_hat) - full_precision(x)) / 2).pow(2).flatten(1).mean(1)


def l1_per_image(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image on the [0, 1] scale: (N,)."""
    return ((full_precision(x_hat) - full_precision(x)) / 2).abs().flatten(1).mean(1)


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


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row: (N, D) -> (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def warmed_up_beta(config, epoch: int) -> float:
    """beta ramped linearly over ``kl_warmup_epochs`` (full beta from the start when 0)."""
    warmup = config.kl_warmup_epochs
    return config.beta * (min(1.0, (epoch + 1) / warmup) if warmup else 1.0)


CALIBRATED_MIN_STD = 1e-3


def calibrated_gaussian_nll(x_hat: torch.Tensor, x: torch.Tensor,
                            min_std: float = CALIBRATED_MIN_STD) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian negative log-likelihood per image with the decoder's standard deviation calibrated to the batch
    (the "optimal sigma" of Rybkin et al. 2021, sigma-VAE): ``(nll (N,), sigma (0-d))``.

    One sigma for every pixel of the batch, sigma^2 = the batch's mean squared error on the [0, 1] scale
    (detached, floored at ``min_std**2``), plugged into the Gaussian NLL over the D = C*H*W values::

        nll_i = D/2 * log(sigma^2) + ||x_i - x_hat_i||^2 / (2 sigma^2)     (the D/2 * log(2 pi) dropped)

    Its batch mean is ``D/2 * (log(MSE) + 1)``, and its gradient is that of ``D/2 * log(MSE)``: the
    reconstruction weight ``D / (2 sigma^2)`` follows the error down as the model gets better instead of being
    fixed by a hand-picked ``decoder_std``. Lower values are negative (a likelihood of a density), so a VAE's
    loss goes below zero. Shared by the VAE (``decoder_std: 0``) and meant for the CVAE too.
    """
    err = mse_per_image(x_hat, x)  # (N,) mean over pixels, [0, 1] scale
    dims = x[0].numel()
    var = err.detach().mean().clamp_min(min_std**2)
    return dims / 2 * (var.log() + err / var), var.sqrt()


def paired_assignment_information(p1: torch.Tensor, p2: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mutual information between the class assignments p1, p2 (N, K) (softmax rows) of two views of the
    same N images (IIC, Ji et al. 2019): at most log K, reached when every image is assigned confidently, the
    same class in both views, and the classes are used equally often. Differentiable in both."""
    joint = p1.T @ p2 / p1.shape[0]  # (K, K)
    joint = ((joint + joint.T) / 2).clamp_min(eps)  # the views are exchangeable
    marginal = joint.sum(1, keepdim=True)  # (K, 1); by symmetry also the column marginal
    return (joint * (joint.log() - marginal.log() - marginal.T.log())).sum()
