"""Deterministic convolutional autoencoder (latent 200 by default).

It has no prior to sample from; new faces come from the PCA + kernel-density sampler of the latent-analysis
package, fitted on encoded training images. Being deterministic, it is also the model the harness tests use
to compare a 2-worker DDP run with a 1-worker run exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facegen.models.base import Batch, FaceModel, LatentPart, StepOutput
from facegen.models.blocks import ConvDecoder, ConvEncoder
from facegen.models.losses import mse_per_image, reconstruction_loss, ssim_per_image
from facegen.models.vae import check_conv_autoencoder_fields


@dataclass(frozen=True)
class AEConfig:
    """The ``model:`` section of an autoencoder config.

    resolution: image side (32, 64 or 128); must match the shards.
    latent_dim: width of the code.
    base_channels, max_channels: width of the first conv stage, doubling per stage up to the cap.
    recon_loss: ``mse``, ``l1`` or ``ssim``.
    """

    resolution: int = 64
    latent_dim: int = 200
    base_channels: int = 32
    max_channels: int = 256
    recon_loss: str = "mse"

    def __post_init__(self) -> None:
        check_conv_autoencoder_fields(self)


class Autoencoder(FaceModel):
    """images -> z (N, latent_dim) -> images, trained on the chosen reconstruction loss."""

    family = "ae"
    config_class = AEConfig
    needs_fitted_sampler = True

    def __init__(self, config: AEConfig) -> None:
        super().__init__(config)
        self.encoder = ConvEncoder(config.resolution, config.base_channels, config.max_channels)
        self.to_code = nn.Linear(self.encoder.feature_dim, config.latent_dim)
        self.decoder = ConvDecoder(config.resolution, config.latent_dim, config.base_channels, config.max_channels)
        self.latent_parts = (LatentPart("z", config.latent_dim, "gaussian"),)

    def forward(self, batch: Batch, player: str = "main") -> StepOutput:
        x = batch["image"]
        x_hat = self.decode(self.encode(x))
        loss = reconstruction_loss(self.config.recon_loss, x_hat, x).mean()
        return StepOutput(loss, {
            "loss": loss.detach(),
            "recon_mse": mse_per_image(x_hat, x).mean().detach(),
            "ssim": ssim_per_image(x_hat.detach(), x).mean(),
        })

    def encode(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_code(self.encoder(images))

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z)

    def sample(self, n: int, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Decodes N(0, I) codes: a crude prior; use the PCA + KDE sampler for realistic faces."""
        device = next(self.parameters()).device
        return self.decode(torch.randn(n, self.config.latent_dim, generator=generator, device=device))
