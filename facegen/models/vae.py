"""VAE and beta-VAE (Kingma & Welling 2014; Higgins et al. 2017) on faces.

Per image, the loss is the negative evidence lower bound with a weighted KL term::

    loss = recon_scale * recon(x_hat, x) + beta * KL(q(z|x) || N(0, I))

``recon`` is the per-pixel reconstruction loss on the [0, 1] scale (see ``losses.py``) and
``recon_scale = 3 * H * W / (2 * decoder_std**2)``, which makes the MSE term exactly the negative
log-likelihood of a Gaussian decoder with standard deviation ``decoder_std``. ``beta = 1`` is the plain VAE;
``beta > 1`` (beta-VAE) pushes the posterior harder toward the factorised prior, which trades reconstruction
sharpness for more disentangled, more individually meaningful latent dimensions. ``kl_warmup_epochs`` ramps
beta linearly from 0 over the first epochs so the decoder learns to use z before the KL term closes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from facegen.errors import ConfigError
from facegen.models.base import Batch, FaceModel, LatentPart, StepOutput
from facegen.models.blocks import SUPPORTED_RESOLUTIONS, ConvDecoder, ConvEncoder
from facegen.models.losses import RECON_LOSSES, mse_per_image, reconstruction_loss
from facegen.models.perceptual import PerceptualConfig, PerceptualLoss


@dataclass(frozen=True)
class VAEConfig:
    """The ``model:`` section of a VAE / beta-VAE config.

    resolution: image side (32, 64 or 128); must match the shards.
    latent_dim: width of z.
    base_channels, max_channels: width of the first conv stage, doubling per stage up to the cap.
    beta: KL weight; 1 = VAE, > 1 = beta-VAE (see the module docstring).
    decoder_std: standard deviation of the Gaussian decoder on the [0, 1] pixel scale; smaller = sharper
        reconstructions, weaker prior matching.
    kl_warmup_epochs: epochs over which beta ramps linearly from 0 to ``beta`` (0 = no warm-up).
    recon_loss: ``mse``, ``l1``, ``ssim`` or ``perceptual`` (a frozen network's feature distance plus a pixel
        term, set up in ``perceptual``; ``recon_scale`` multiplies the whole mix, so the decoder is no longer
        exactly Gaussian: see ``perceptual.py`` for the terms' sizes).
    perceptual: the ``model.perceptual.*`` settings, read only with ``recon_loss: perceptual``.
    """

    resolution: int = 64
    latent_dim: int = 64
    base_channels: int = 32
    max_channels: int = 256
    beta: float = 1.0
    decoder_std: float = 0.1
    kl_warmup_epochs: int = 0
    recon_loss: str = "mse"
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)

    def __post_init__(self) -> None:
        check_vae_fields(self)


def check_conv_autoencoder_fields(config) -> None:
    """Checks shared by the conv autoencoder configs (AE, VAE, CVAE): resolution, widths, loss (only the
    perceptual file's name: the file itself is read at the first training step, so configs parse without it)."""
    if config.resolution not in SUPPORTED_RESOLUTIONS:
        raise ConfigError(f"model.resolution: must be one of {SUPPORTED_RESOLUTIONS}, got {config.resolution}")
    if config.latent_dim <= 0 or config.base_channels < 4:
        raise ConfigError("model.latent_dim / model.base_channels: must be positive (base_channels >= 4)")
    if config.recon_loss not in RECON_LOSSES:
        raise ConfigError(f"model.recon_loss: must be one of {RECON_LOSSES}, got {config.recon_loss!r}")
    if config.recon_loss == "perceptual" and not config.perceptual.path:
        raise ConfigError("model.perceptual.path: required when model.recon_loss is perceptual")


def check_vae_fields(config) -> None:
    """Checks shared by the VAE and CVAE configs."""
    check_conv_autoencoder_fields(config)
    if config.beta < 0 or config.decoder_std <= 0:
        raise ConfigError("model.beta must be >= 0 and model.decoder_std > 0")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row: (N, D) -> (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def make_perceptual_loss(config) -> PerceptualLoss | None:
    """The family's perceptual loss when ``recon_loss: perceptual`` (its network loads at first use), else None."""
    return PerceptualLoss(config.perceptual, config.resolution) if config.recon_loss == "perceptual" else None


def warmed_up_beta(config, epoch: int) -> float:
    """beta ramped linearly over ``kl_warmup_epochs`` (full beta from the start when 0)."""
    warmup = config.kl_warmup_epochs
    return config.beta * (min(1.0, (epoch + 1) / warmup) if warmup else 1.0)


class VAE(FaceModel):
    """Convolutional VAE with a diagonal Gaussian posterior and an N(0, I) prior."""

    family = "vae"
    config_class = VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        self.encoder = ConvEncoder(config.resolution, config.base_channels, config.max_channels)
        self.to_posterior = nn.Linear(self.encoder.feature_dim, 2 * config.latent_dim)
        self.decoder = ConvDecoder(config.resolution, config.latent_dim, config.base_channels, config.max_channels)
        self.recon_scale = 3 * config.resolution**2 / (2 * config.decoder_std**2)
        self.latent_parts = (LatentPart("z", config.latent_dim, "gaussian"),)
        self._beta_now = config.beta if config.kl_warmup_epochs == 0 else 0.0
        self.perceptual = make_perceptual_loss(config)  # a plain object: not a submodule, not in state_dict

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (N, 3, H, W) -> (mu, logvar), each (N, latent_dim)."""
        mu, logvar = self.to_posterior(self.encoder(images)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)  # keeps exp(logvar) finite early in training

    def forward(self, batch: Batch, player: str = "main") -> StepOutput:
        x = batch["image"]
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        x_hat = self.decoder(z)
        recon = reconstruction_loss(self.config.recon_loss, x_hat, x, self.perceptual)  # (N,)
        kl = gaussian_kl(mu, logvar)
        loss = (self.recon_scale * recon + self._beta_now * kl).mean()
        return StepOutput(loss, {
            "loss": loss.detach(),
            "recon_mse": mse_per_image(x_hat, x).mean().detach(),
            "kl": kl.mean().detach(),
        })

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Sampled-z loss plus the posterior-mean reconstruction error (what a user sees)."""
        metrics = self(batch).metrics
        metrics["recon_mse_mean_z"] = mse_per_image(self.decode(self.encode(batch["image"])), batch["image"]).mean()
        return metrics

    def set_epoch(self, epoch: int) -> None:
        self._beta_now = warmed_up_beta(self.config, epoch)

    # LatentModel
    def encode(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.posterior(images)[0]

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z)

    def sample(self, n: int, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z)
