"""Differentiable augmentations of a GAN's images: DiffAugment for what the discriminator sees (Zhao et al.
2020), and ``jitter``, the shift/zoom/rotation the info step's code heads read through (``info_augment``).

DiffAugment: with a few thousand training faces the discriminator memorises them within a few epochs; from then on its
verdict says "not one of those" rather than "not a face", and the generator's samples stop improving. The same
random colour, translation and cutout applied to real *and* generated images (in the discriminator's and the
generator's steps alike, gradients flowing through) keep the discriminator from memorising, while it still
learns what the data look like. The augmentations do not leak into the samples because reals and fakes
always pass through the same random transforms. Images are (N, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")
TRANSLATION = 0.125  # shift of up to this fraction of the side (the paper's ratio)
CUTOUT = 0.5  # side of the zeroed square, as a fraction of the image's


def _color(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    rand = torch.rand(n, 3, 1, 1, 1, device=x.device, dtype=x.dtype)  # brightness, saturation, contrast
    x = x + (rand[:, 0] - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand[:, 1] * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (rand[:, 2] + 0.5) + mean


def _translation(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * TRANSLATION + 0.5), int(w * TRANSLATION + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)  # (N, H, 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)  # (N, 1, W)
    padded = F.pad(x, [1, 1, 1, 1])  # out-of-frame pixels read the zero border
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * CUTOUT + 0.5), int(w * CUTOUT + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    dy = torch.arange(h, device=x.device).view(1, h, 1) - cy + ch // 2  # row offset into the square
    dx = torch.arange(w, device=x.device).view(1, 1, w) - cx + cw // 2
    inside = (dy >= 0) & (dy < ch) & (dx >= 0) & (dx < cw)  # (N, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(images: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """images (N, 3, H, W) in [-1, 1], each image augmented independently by every op of ``policy`` in order
    (a subset of :data:`POLICIES`); differentiable in the images. An empty policy returns them as they are."""
    for name in policy:
        images = _OPS[name](images)
    return images


def jitter(images: torch.Tensor, amount: float) -> torch.Tensor:
    """images (N, C, H, W), each randomly shifted, zoomed and rotated by ``amount`` (see ``info_augment``);
    differentiable (one affine resampling), so the generator learns through it. amount 0: images as is."""
    if amount <= 0:
        return images
    n = images.shape[0]
    uniform = torch.rand(n, 4, device=images.device, dtype=images.dtype) * 2 - 1  # [-1, 1)
    angle, zoom = uniform[:, 0] * amount * torch.pi / 2, 1 + uniform[:, 1] * amount
    theta = torch.stack([torch.stack([angle.cos() / zoom, -angle.sin() / zoom, 2 * amount * uniform[:, 2]], 1),
                         torch.stack([angle.sin() / zoom, angle.cos() / zoom, 2 * amount * uniform[:, 3]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)
