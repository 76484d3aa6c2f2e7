"""VAE and beta-VAE (Kingma & Welling 2014; Higgins et al. 2017) on faces.

Per image, the loss is the negative evidence lower bound with a weighted KL term::

    loss = recon_scale * recon(x_hat, x) + beta * KL(q(z|x) || N(0, I))

``recon`` is the per-pixel reconstruction loss on the [0, 1] scale (see ``losses.py``) and
``recon_scale = 3 * H * W / (2 * decoder_std**2)``, which makes the MSE term exactly the negative
log-likelihood of a Gaussian decoder with standard deviation ``decoder_std``. With ``decoder_std: 0`` the
decoder's standard deviation is calibrated instead (sigma-VAE, Rybkin et al. 2021): sigma^2 is each batch's
mean squared error, so the reconstruction term is ``3*H*W/2 * log(MSE)`` up to a constant
(``losses.calibrated_gaussian_nll``) and its weight against the KL grows as reconstructions get better,
where a fixed ``decoder_std`` larger than the model's real error blurs them. ``beta = 1`` is the plain VAE;
``beta > 1`` (beta-VAE) pushes the posterior harder toward the factorised prior, which trades reconstruction
sharpness for more disentangled, more individually meaningful latent dimensions. ``kl_warmup_epochs`` ramps
beta linearly from 0 over the first epochs so the decoder learns to use z before the KL term closes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.errors import ConfigError
from facegen.models.adversarial import AdversarialConfig, PatchAdversary
from facegen.models.base import Batch, LatentModel, LatentPart, StepOutput
from facegen.models.blocks import ConvDecoder, ConvEncoder, check_vae_fields
from facegen.models.losses import (calibrated_gaussian_nll, full_precision, gaussian_kl, mse_per_image,
                                   reconstruction_loss, warmed_up_beta)
from facegen.models.perceptual import PerceptualConfig, load_perceptual_trunk, make_perceptual_loss


@dataclass(frozen=True)
class VAEConfig:
    """The ``model:`` section of a VAE / beta-VAE config.

    resolution: image side (32, 64 or 128); must match the shards.
    latent_dim: width of z.
    base_channels, max_channels: width of the first conv stage, doubling per stage up to the cap.
    decoder_res_blocks: residual blocks after each of the decoder's upsampling stages (0 = one conv each).
    beta: KL weight; 1 = VAE, > 1 = beta-VAE (see the module docstring).
    decoder_std: standard deviation of the Gaussian decoder on the [0, 1] pixel scale; smaller = sharper
        reconstructions, weaker prior matching. ``0`` = calibrated (the "optimal sigma" sigma-VAE): sigma^2 is
        the batch's mean squared error, detached, so the model sets its own sharpness (the loss then goes
        negative: it is a log-density); needs ``recon_loss: mse``.
    kl_warmup_epochs: epochs over which beta ramps linearly from 0 to ``beta`` (0 = no warm-up).
    recon_loss: ``mse``, ``l1``, ``ssim`` or ``perceptual`` (a frozen network's feature distance plus a pixel
        term, set up in ``perceptual``; ``recon_scale`` multiplies the whole mix, so the decoder is no longer
        exactly Gaussian: see ``perceptual.py`` for the terms' sizes).
    perceptual: the ``model.perceptual.*`` settings, read only with ``recon_loss: perceptual``.
    attribute_dims: CelebA attributes that the first latent dimensions are trained to carry, one each in this
        order: the posterior mean of dimension i is a logit for attribute i (binary cross-entropy against the
        batch's labels), the semi-supervised disentanglement of Locatello et al. 2020. Each such dimension is
        then the one that carries its attribute (MIG), though the rest of z still holds part of it, so moving
        the dimension alone is a weak edit (README, "Named dimensions"); empty = none.
    attribute_weight: weight of that cross-entropy, summed over the named dimensions, against the per-image
        loss (nats). The KL term pulls each mean back to 0, so the weight sets how far apart a dimension's two
        values sit: at 500 about +-4.5 (the reconstruction term is thousands of nats per image).
    adversarial: the ``model.adversarial.*`` settings: a patch critic whose hinge loss sharpens the decodes
        (``adversarial.py``); ``weight: 0`` (the default) = off.
    """

    resolution: int = 64
    latent_dim: int = 64
    base_channels: int = 32
    max_channels: int = 256
    decoder_res_blocks: int = 0
    beta: float = 1.0
    decoder_std: float = 0.1
    kl_warmup_epochs: int = 0
    recon_loss: str = "mse"
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    attribute_dims: tuple[str, ...] = ()
    attribute_weight: float = 500.0
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def __post_init__(self) -> None:
        unknown = [name for name in self.attribute_dims if name not in CELEBA_ATTRIBUTES]
        if unknown:
            raise ConfigError(f"model.attribute_dims: unknown CelebA attributes {unknown}")
        if len(set(self.attribute_dims)) < len(self.attribute_dims):
            raise ConfigError("model.attribute_dims: an attribute is named twice")
        if len(self.attribute_dims) > self.latent_dim or self.attribute_weight < 0:
            raise ConfigError("model.attribute_dims / attribute_weight: at most latent_dim names; weight >= 0")
        if self.decoder_std < 0:
            raise ConfigError(f"model.decoder_std: must be > 0, or 0 for a calibrated decoder, got {self.decoder_std}")
        if self.decoder_std == 0:
            if self.recon_loss != "mse":
                raise ConfigError("model.decoder_std: 0 (calibrated sigma) is the Gaussian likelihood of recon_loss "
                                  f"mse; got recon_loss {self.recon_loss!r}")
            replace(self, decoder_std=1.0)  # the shared checks, on a copy they accept (they want decoder_std > 0)
        else:
            check_vae_fields(self)

    @property
    def calibrated(self) -> bool:
        """Whether the decoder's standard deviation is calibrated per batch (``decoder_std: 0``)."""
        return self.decoder_std == 0


class VAE(LatentModel):
    """Convolutional VAE with a diagonal Gaussian posterior and an N(0, I) prior."""

    family = "vae"
    config_class = VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        self.encoder = ConvEncoder(config.resolution, config.base_channels, config.max_channels)
        self.to_posterior = nn.Linear(self.encoder.feature_dim, 2 * config.latent_dim)
        self.decoder = ConvDecoder(config.resolution, config.latent_dim, config.base_channels, config.max_channels,
                                   res_blocks=config.decoder_res_blocks)
        # None when calibrated: the weight D / (2 sigma^2) is then recomputed from every batch.
        self.recon_scale = None if config.calibrated else 3 * config.resolution**2 / (2 * config.decoder_std**2)
        self.latent_parts = (LatentPart("z", config.latent_dim, "gaussian"),)
        # A buffer, not a float: a compiled step (train.compile) would recompile each time a float changed.
        self.register_buffer("beta_now", torch.tensor(config.beta if config.kl_warmup_epochs == 0 else 0.0),
                             persistent=False)
        self.perceptual = make_perceptual_loss(config)  # a plain object: not a submodule, not in state_dict
        # A buffer, so it follows the model to the GPU (a host list as an index syncs every step).
        index = [CELEBA_ATTRIBUTES.index(name) for name in config.attribute_dims]
        self.register_buffer("attr_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.adversarial = PatchAdversary(config.adversarial) if config.adversarial.active else None
        if self.adversarial is not None:
            self.players = ("main", PatchAdversary.player)
            self.player_networks[PatchAdversary.player] = self.adversarial

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (N, 3, H, W) -> (mu, logvar), each (N, latent_dim)."""
        mu, logvar = full_precision(self.to_posterior(self.encoder(images))).chunk(2, dim=1)  # the KL at full precision
        return mu, logvar.clamp(-10, 10)  # keeps exp(logvar) finite early in training

    def forward(self, batch: Batch, player: str = "main") -> StepOutput:
        x = batch["image"]
        if player == PatchAdversary.player:
            return StepOutput(*self.adversarial.critic_step(x))
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        x_hat = self.decoder(z)
        kl = gaussian_kl(mu, logvar)
        extra = {}
        if self.config.calibrated:
            recon, sigma = calibrated_gaussian_nll(x_hat, x)  # (N,), already the weighted reconstruction term
            extra["decoder_std"] = sigma
        else:
            recon = self.recon_scale * reconstruction_loss(self.config.recon_loss, x_hat, x, self.perceptual)  # (N,)
        loss = (recon + self.beta_now * kl).mean()
        if self.adversarial is not None:
            loss = loss + self.adversarial.generator_term(x_hat, recon.mean(), extra)
        if self.attr_index.numel():
            named, labels = mu[:, :len(self.attr_index)], batch["attrs"][:, self.attr_index].float()  # (N, K)
            bce = F.binary_cross_entropy_with_logits(named, labels, reduction="none").sum(1).mean()
            loss = loss + self.config.attribute_weight * bce
            extra.update(attribute_bce=bce.detach(), attribute_acc=((named > 0) == (labels > 0.5)).float().mean())
        return StepOutput(loss, {
            "loss": loss.detach(),
            "recon_mse": mse_per_image(x_hat, x).mean().detach(),
            "kl": kl.mean().detach(),
            **extra,
        })

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Sampled-z loss plus the posterior-mean reconstruction error (what a user sees)."""
        metrics = self(batch).metrics
        metrics["recon_mse_mean_z"] = mse_per_image(self.decode(self.encode(batch["image"])), batch["image"]).mean()
        return metrics

    def set_epoch(self, epoch: int) -> None:
        self.beta_now.fill_(warmed_up_beta(self.config, epoch))
        if self.adversarial is not None:
            self.adversarial.set_epoch(epoch)

    def load_pretrained(self, loader) -> None:
        load_perceptual_trunk(self.perceptual, self.config, loader)

    def attribute_dimensions(self) -> dict[str, int]:
        """Attribute name -> the latent dimension trained to carry it (``attribute_dims``)."""
        return {name: i for i, name in enumerate(self.config.attribute_dims)}

    # LatentModel
    def encode(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.posterior(images)[0]

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z)
