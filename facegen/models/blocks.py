"""Convolutional stacks shared by the families: an encoder from an image to a 4x4 feature map, and its mirror.

GroupNorm rather than BatchNorm throughout: it normalises each image on its own, so a DDP run's result does
not depend on how the global batch is split over workers, and tiny validation batches behave like training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facegen.errors import ConfigError
from facegen.models.losses import RECON_LOSSES

SUPPORTED_RESOLUTIONS = (32, 64, 128)


def stage_channels(resolution: int, base: int, cap: int) -> list[int]:
    """Channel widths of the stride-2 stages that take ``resolution`` down to 4x4 (doubling, capped)."""
    if resolution not in SUPPORTED_RESOLUTIONS:
        raise ValueError(f"resolution must be one of {SUPPORTED_RESOLUTIONS}, got {resolution}")
    stages = int(math.log2(resolution // 4))
    return [min(base * 2**i, cap) for i in range(stages)]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(8, channels // 4), num_channels=channels)


class ConvEncoder(nn.Module):
    """images (N, C_in, R, R) -> features (N, feature_dim), through stride-2 conv stages down to 4x4."""

    def __init__(self, resolution: int, base_channels: int = 32, max_channels: int = 256, in_channels: int = 3):
        super().__init__()
        widths = stage_channels(resolution, base_channels, max_channels)
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1), _norm(width), nn.LeakyReLU(0.2)]
            previous = width
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = previous * 4 * 4

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))) at a fixed width and resolution (pre-activation, He et al. 2016);
    the residual branch starts at zero, so a new block begins as the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                    _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))
        nn.init.zeros_(self.branch[-1].weight)
        nn.init.zeros_(self.branch[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H, W)
        return x + self.branch(x)


class ConvDecoder(nn.Module):
    """z (N, latent_dim) -> images (N, 3, R, R) in [-1, 1]; the mirror of :class:`ConvEncoder`.

    Upsampling is nearest-neighbour + 3x3 conv rather than transposed convs, which avoids checkerboard
    artefacts in reconstructions and samples. ``res_blocks`` residual blocks after each upsampling stage add
    depth where the image is drawn (0 = one conv per stage).
    """

    def __init__(self, resolution: int, latent_dim: int, base_channels: int = 32, max_channels: int = 256,
                 out_channels: int = 3, res_blocks: int = 0):
        super().__init__()
        widths = stage_channels(resolution, base_channels, max_channels)[::-1]
        self.start_channels = widths[0]
        self.project = nn.Linear(latent_dim, widths[0] * 4 * 4)
        layers: list[nn.Module] = []
        for width, next_width in zip(widths, widths[1:] + [base_channels]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(width, next_width, 3, padding=1), _norm(next_width), nn.SiLU()]
            layers += [ResBlock(next_width) for _ in range(res_blocks)]
        self.net = nn.Sequential(*layers, nn.Conv2d(base_channels, out_channels, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.start_channels, 4, 4)
        return self.net(x)


def check_conv_autoencoder_fields(config) -> None:
    """Checks shared by the conv autoencoder configs (AE, VAE, CVAE): resolution, widths, loss (only the
    perceptual file's name: the file itself is read at the first training step, so configs parse without it)."""
    if config.resolution not in SUPPORTED_RESOLUTIONS:
        raise ConfigError(f"model.resolution: must be one of {SUPPORTED_RESOLUTIONS}, got {config.resolution}")
    if config.latent_dim <= 0 or config.base_channels < 4:
        raise ConfigError("model.latent_dim / model.base_channels: must be positive (base_channels >= 4)")
    if config.decoder_res_blocks < 0:
        raise ConfigError(f"model.decoder_res_blocks: must be >= 0, got {config.decoder_res_blocks}")
    if config.recon_loss not in RECON_LOSSES:
        raise ConfigError(f"model.recon_loss: must be one of {RECON_LOSSES}, got {config.recon_loss!r}")
    if config.recon_loss == "perceptual" and not config.perceptual.path:
        raise ConfigError("model.perceptual.path: required when model.recon_loss is perceptual")


def check_vae_fields(config) -> None:
    """Checks shared by the VAE and CVAE configs."""
    check_conv_autoencoder_fields(config)
    if config.beta < 0 or config.decoder_std <= 0:
        raise ConfigError("model.beta must be >= 0 and model.decoder_std > 0")
