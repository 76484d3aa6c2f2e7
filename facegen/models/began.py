"""BEGAN (Berthelot et al. 2017) with InfoGAN codes: the discriminator is an autoencoder.

D reconstructs images through a bottleneck h; its per-image loss is the L1 reconstruction error
``L(v) = |v - D(v)|`` (mean over pixels, [0, 1] scale). D learns to reconstruct real images well and
generated ones badly; G learns to make images D reconstructs well. The equilibrium term k_t decides how
hard D pushes fakes away, and is driven to keep ``L(G(z)) = gamma * L(x)``::

    discriminator  L_D = L(x) - k_t * L(G(z))                         -> D encoder, bottleneck, decoder
                   k_t+1 = clamp(k_t + lambda_k * (gamma * L(x) - L(G(z))), 0, 1)
    generator      L_G = L(G(z))                                      -> G
    info           InfoGAN's code/noise recovery on h of G(z)         -> G, D encoder + bottleneck, heads

gamma (the diversity ratio) trades image quality (low) for diversity (high). The convergence measure
``M = L(x) + |gamma * L(x) - L(G(z))|`` falls as training converges and is reported every discriminator
step and at validation (monitor ``val/M``). The code heads of ``infogan.py`` read the bottleneck h, so a
real image encodes to codes + noise that the generator turns back into an image.

k_t and DDP: k_t is a registered buffer, so it is checkpointed and bundled. torch's DDP (default
``broadcast_buffers=True``, renamed ``forward_sync_buffers`` in recent releases) copies every buffer from
rank 0 to all ranks *before each forward*; an update made from one rank's own batch would thus be thrown
away on the other ranks and k_t would follow rank 0's batches only. Instead the update uses L(x) and
L(G(z)) averaged over all ranks (one all-reduce of two numbers), so every rank computes the same k_t and
the broadcast changes nothing. k_t moves only in training mode: validation never touches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from facegen.errors import ConfigError
from facegen.models.base import Batch, StepOutput
from facegen.models.blocks import ConvDecoder, ConvEncoder
from facegen.models.code_gan import CodeGAN, InfoGANConfig
from facegen.models.losses import l1_per_image


@dataclass(frozen=True)
class BEGANConfig(InfoGANConfig):
    """The ``model:`` section of a BEGAN config: every InfoGAN key (codes, info-loss weights, per-player
    learning rates and betas; see ``InfoGANConfig``), plus:

    hidden_dim: width of the discriminator autoencoder's bottleneck h (the code heads read it).
    gamma: diversity ratio in (0, 1], the target of L(G(z)) / L(x).
    lambda_k: learning rate of the equilibrium term k_t.
    k_init: k_t before the first step, in [0, 1] (the paper starts at 0).
    """

    hidden_dim: int = 64
    gamma: float = 0.5
    lambda_k: float = 0.001
    k_init: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_dim < 1:
            raise ConfigError(f"model.hidden_dim: must be >= 1, got {self.hidden_dim}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"model.gamma: must be in (0, 1], got {self.gamma}")
        if self.lambda_k < 0:
            raise ConfigError(f"model.lambda_k: must be >= 0, got {self.lambda_k}")
        if not 0 <= self.k_init <= 1:
            raise ConfigError(f"model.k_init: must be in [0, 1], got {self.k_init}")
        if self.info_in_steps:  # BEGAN's steps keep the info loss in its own player
            raise ConfigError("model.info_in_steps: InfoGAN only; BEGAN trains its codes in the info player")


class BEGAN(CodeGAN):
    """Generator + autoencoder discriminator + code heads on the bottleneck; buffer ``k`` holds k_t."""

    family = "began"
    config_class = BEGANConfig

    def __init__(self, config: BEGANConfig) -> None:
        super().__init__(config, config.hidden_dim)
        self.d_encoder = ConvEncoder(config.resolution, config.base_channels, config.max_channels)
        self.d_bottleneck = nn.Linear(self.d_encoder.feature_dim, config.hidden_dim)
        self.d_decoder = ConvDecoder(config.resolution, config.hidden_dim, config.base_channels,
                                     config.max_channels)
        self.register_buffer("k", torch.tensor(float(config.k_init)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) -> bottleneck h (N, hidden_dim)."""
        return self.d_bottleneck(self.d_encoder(images))

    def reconstruction_error(self, images: torch.Tensor) -> torch.Tensor:
        """L(v) per image: images (N, 3, H, W) -> (N,) mean |v - D(v)| on the [0, 1] scale."""
        return l1_per_image(self.d_decoder(self.features(images)), images)

    def _step_generator(self, batch: Batch) -> StepOutput:
        loss = self.reconstruction_error(self.augment(self.generator(self._prior(batch)))).mean()
        return StepOutput(loss, {"g_loss": loss.detach()})

    def _step_discriminator(self, batch: Batch) -> StepOutput:
        real = batch["image"]
        n = real.shape[0]
        with torch.no_grad():  # the generator is not this player's; no graph through it
            fake = self.generator(self._prior(batch))
        errors = self.reconstruction_error(self.augment(torch.cat([real, fake])))  # per image: GroupNorm, DiffAugment
        loss_real, loss_fake = errors[:n].mean(), errors[n:].mean()
        k = self.k.clone()  # the value this step uses; the buffer itself is updated in place below
        loss = loss_real - k * loss_fake
        if self.training:
            self._update_k(loss_real.detach(), loss_fake.detach())
        balance = self.config.gamma * loss_real.detach() - loss_fake.detach()
        return StepOutput(loss, {"d_loss": loss.detach(), "loss_real": loss_real.detach(),
                                 "loss_fake": loss_fake.detach(), "k": k,
                                 "M": loss_real.detach() + balance.abs()})

    @torch.no_grad()
    def _update_k(self, loss_real: torch.Tensor, loss_fake: torch.Tensor) -> None:
        """k_t+1 = clamp(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1) from the means over all DDP ranks."""
        means = torch.stack([loss_real, loss_fake]).float()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(means)  # every rank is in this step together: the loop steps players in lock-step
            means /= dist.get_world_size()
        step = self.config.lambda_k * (self.config.gamma * means[0] - means[1])
        self.k.copy_((self.k + step).clamp(0.0, 1.0))

    def parameters_for(self, player: str) -> Iterator[nn.Parameter]:
        discriminator = (self.d_encoder, self.d_bottleneck, self.d_decoder)
        modules = {"generator": (self.generator,), "discriminator": discriminator,
                   "info": (self.generator, self.d_encoder, self.d_bottleneck, self.codes)}[player]
        return self._modules_parameters(*modules)
