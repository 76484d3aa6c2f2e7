"""InfoGAN (Chen et al. 2016): a GAN whose generator input carries codes the model must keep recoverable.

The generator G reads a latent vector in ``latent_parts`` order: one one-hot per categorical code (e.g. 10
values, which on digits tends to become the digit class), ``continuous`` uniform codes in [-1, 1] (stroke
width, slant, ...) and ``noise_dim`` Gaussian noise. One convolutional trunk T (the discriminator body)
carries three heads: real/fake logit, code (categorical logits, continuous mean and log-std) and noise
(an estimate of the noise part). Players, stepped in this order on every batch (``training/loop.py``)::

    generator      softplus(-D(G(z)))  (non-saturating)                              -> G
    discriminator  softplus(-D(x)) + softplus(D(G(z))), fakes made without grad        -> T + real/fake head
    info           lambda_cat * CE + lambda_cont * Gaussian NLL + lambda_noise * MSE    -> G + T + code/noise heads

With ``info_in_steps`` (Chen et al.'s own code) there is no info player: the info loss is added to the
generator's loss (-> G) and, on the same fakes, to the discriminator's (-> T + heads). With ``diff_augment``
the discriminator judges every image through DiffAugment, in both steps; the info player reads fakes as drawn
(with ``info_in_steps`` the info term rides on those steps, so it reads them augmented).

The info loss is, up to constants, minus the variational lower bound on the mutual information between the
codes and the image: minimising it makes every code readable from the image, which is what gives codes a
meaning. Recovering the noise too makes G nearly invertible, so ``encode`` maps a *real* image to a latent
that regenerates it, ready for editing (swap the categorical code, move a continuous one).

:class:`~facegen.models.code_gan.CodeGAN` (the shared generator, code heads, info step and per-player optimizer
settings) is also the base of BEGAN (``began.py``), which puts the code heads on its autoencoder's bottleneck.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from facegen.models.base import Batch, StepOutput
from facegen.models.blocks import ConvEncoder
from facegen.models.code_gan import CodeGAN, InfoGANConfig
from facegen.models.losses import full_precision

class InfoGAN(CodeGAN):
    """InfoGAN with one trunk shared by the real/fake, code and noise heads (see the module docstring)."""

    family = "infogan"
    config_class = InfoGANConfig

    def __init__(self, config: InfoGANConfig) -> None:
        trunk = ConvEncoder(config.resolution, config.base_channels, config.max_channels)
        super().__init__(config, trunk.feature_dim)
        self.trunk = trunk
        self.real_fake = nn.Linear(trunk.feature_dim, 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) -> trunk features (N, F)."""
        return self.trunk(images)

    def logit(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, F) -> real/fake logits (N, 1), at full precision (autocast leaves softplus in bf16)."""
        return full_precision(self.real_fake(features))

    def _step_generator(self, batch: Batch) -> StepOutput:
        latent = self._prior(batch)
        features = self.trunk(self.augment(self.generator(latent)))
        loss = F.softplus(-self.logit(features)).mean()  # -log D(G(z)): strong gradients while D wins
        metrics = {"g_loss": loss.detach()}
        if self.config.info_in_steps:  # Chen et al.: G's own loss carries the info term
            info = self.codes.loss(features, latent)
            loss, metrics = loss + info.loss, {**metrics, **info.metrics}
        return StepOutput(loss, metrics)

    def _step_discriminator(self, batch: Batch) -> StepOutput:
        real = batch["image"]
        latent = self._prior(batch)
        with torch.no_grad():  # the generator is not this player's; no graph through it
            fake = self.generator(latent)
        features = self.trunk(self.augment(torch.cat([real, fake])))  # GroupNorm, DiffAugment: per image
        logits = self.logit(features).squeeze(1)
        real_logit, fake_logit = logits[:real.shape[0]], logits[real.shape[0]:]
        d_loss = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
        metrics = {"d_loss": d_loss.detach(), "d_real_acc": (real_logit > 0).float().mean(),
                   "d_fake_acc": (fake_logit < 0).float().mean()}
        if self.config.info_in_steps:  # ... and so does D's (trunk and code heads), on the same fakes
            return StepOutput(d_loss + self.codes.loss(features[real.shape[0]:], latent).loss, metrics)
        return StepOutput(d_loss, metrics)

    def parameters_for(self, player: str) -> Iterator[nn.Parameter]:
        heads = (self.codes,) if self.config.info_in_steps else ()  # no info player: D steps the code heads
        modules = {"generator": (self.generator,), "discriminator": (self.trunk, self.real_fake, *heads),
                   "info": (self.generator, self.trunk, self.codes)}[player]
        return self._modules_parameters(*modules)
