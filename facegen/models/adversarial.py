"""Adversarial patch loss (``model.adversarial`` of the AE, VAE and CVAE): a PatchGAN critic with the hinge loss,
the term VQGAN (Esser et al. 2021) adds to a pixel or perceptual loss to sharpen what those leave blurred.

The critic (PatchGAN, Isola et al. 2017) maps an image to a grid of logits, one per overlapping patch (34 px
across with ``layers: 2``, 70 px with pix2pix's 3), so it judges texture and edges rather than the whole face.
It is its own player, ``"critic"``, trained after the main player on the batch's images against that step's
decodes (detached) with the hinge loss::

    critic:  mean relu(1 - D(x)) + mean relu(1 + D(x_hat))

From ``start_epoch`` on, the main player adds the generator's side, weighted adaptively::

    main:    loss += weight * lambda * -mean D(x_hat),
             lambda = ||d recon / d x_hat|| / (||d adv / d x_hat|| + 1e-4)   (detached, at most 1e4)

lambda is VQGAN's adaptive weight, taken at the decoded image rather than at the decoder's last layer (the image
is what every family has): the adversarial pull on the pixels is ``weight`` times the reconstruction's, whatever
units the family's loss is in (an ELBO in nats, an AE's mean squared error). The term is added through its
gradient on ``x_hat``, computed for lambda anyway, which saves a second backward pass through the critic. The
critic trains from the first epoch, so it already tells real from decoded when the term switches on. Its
weights are part of the model's state (a bundle carries them; they are small), but only training uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facegen.errors import ConfigError
from facegen.models.base import OptimizerSettings
from facegen.models.losses import full_precision

KEY = "model.adversarial"
MAX_LAMBDA = 1e4


@dataclass(frozen=True)
class AdversarialConfig:
    """The ``model.adversarial:`` section of the AE / VAE / CVAE configs; ``weight: 0`` (the default) = off.

    weight: the adversarial term's pull on the decoded pixels relative to the reconstruction term's (the
        adaptive weight above makes it unit-free); VQGAN uses 0.8 with a perceptual loss; 0 = off, no critic.
    start_epoch: first epoch (0-based) whose main steps add the term; the critic trains from epoch 0.
    channels: width of the critic's first layer, doubling per layer.
    layers: depth of the critic: 2 = 34 px patches (a 14x14 grid of logits at 64 px), 3 = pix2pix's 70 px.
    lr: the critic's learning rate; 0 = ``train.lr``.
    edits: a CVAE with ``model.constraint.classifier``: its decodes under changed conditions (the edits) are
        pulled toward real-looking too, with the reconstructions' lambda, and shown to the critic (AttGAN puts
        its adversarial loss on edited faces); the AE and VAE decode no edits while training and ignore it.
    """

    weight: float = 0.0
    start_epoch: int = 0
    channels: int = 32
    layers: int = 2
    lr: float = 0.0
    edits: bool = False

    def __post_init__(self) -> None:
        if self.weight < 0 or self.start_epoch < 0 or self.lr < 0:
            raise ConfigError(f"{KEY}.weight / start_epoch / lr: must be >= 0")
        if self.channels < 4 or not 1 <= self.layers <= 4:
            raise ConfigError(f"{KEY}.channels must be >= 4 and {KEY}.layers in 1..4, got {self.channels}, "
                              f"{self.layers}")

    @property
    def active(self) -> bool:
        return self.weight > 0


class PatchCritic(nn.Module):
    """images (N, 3, H, W) in [-1, 1] -> patch logits (N, 1, h, w): ``layers`` 4x4 stride-2 convs, one 4x4
    stride-1 conv, a 4x4 conv to one channel (pix2pix's NLayerDiscriminator, GroupNorm instead of BatchNorm so a
    DDP run does not depend on how the batch is split)."""

    def __init__(self, channels: int = 32, layers: int = 2):
        super().__init__()
        widths = [min(channels * 2**i, channels * 8) for i in range(layers + 1)]
        stack: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, layers + 1):
            stride = 2 if i < layers else 1
            stack += [nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1),
                      nn.GroupNorm(min(8, widths[i] // 4), widths[i]), nn.LeakyReLU(0.2)]
        stack.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*stack)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return full_precision(self.net(images))  # the hinge and its means, not the convs, need the digits


class PatchAdversary(nn.Module):
    """The critic and both sides of its loss, for a family to call from its ``forward``::

        loss = loss + self.adversarial.generator_term(x_hat, recon_term, metrics)   # main player
        return self.adversarial.critic_step(batch["image"])                         # player "critic"

    ``generator_term`` keeps the step's decodes (detached) for the critic step that follows it in the loop.
    """

    player = "critic"

    def __init__(self, config: AdversarialConfig):
        super().__init__()
        self.config = config
        self.critic = PatchCritic(config.channels, config.layers)
        self.switched_on = config.start_epoch == 0
        self._fakes: torch.Tensor | None = None

    def optimizer_settings(self, lr: float) -> OptimizerSettings:
        """The critic's AdamW: its own ``lr`` if set, else the run's; VQGAN's betas; no weight decay."""
        return OptimizerSettings(lr=self.config.lr or lr, betas=(0.5, 0.9), weight_decay=0.0)

    def set_epoch(self, epoch: int) -> None:
        self.switched_on = epoch >= self.config.start_epoch

    def generator_term(self, x_hat: torch.Tensor, recon_term: torch.Tensor, metrics: dict[str, torch.Tensor],
                       edited: torch.Tensor | None = None) -> torch.Tensor:
        """The main player's adversarial term (a scalar; 0 before ``start_epoch`` or without gradients).
        ``recon_term``: the batch-mean reconstruction loss whose gradient on ``x_hat`` sets the scale;
        ``edited``: other decodes (M, 3, H, W) to pull the same way with the same lambda and to show the critic
        (a CVAE's decodes under changed conditions, with ``edits: true``)."""
        if not torch.is_grad_enabled():  # validation, inference: nothing to pull on
            return x_hat.new_zeros(())
        fakes = [x_hat] if edited is None else [x_hat, edited]
        self._fakes = torch.cat(fakes).detach()
        if not self.switched_on:
            return x_hat.new_zeros(())
        advs = [-self.critic(fake).mean() for fake in fakes]
        recon_grad = torch.autograd.grad(recon_term, x_hat, retain_graph=True)[0]
        adv_grads = torch.autograd.grad(advs, fakes)  # each (N, 3, H, W); the critic's graph is done with
        lam = (recon_grad.norm() / (adv_grads[0].norm() + 1e-4)).clamp(max=MAX_LAMBDA)
        metrics.update(adv_g=advs[0].detach(), adv_lambda=lam)
        if edited is not None:
            metrics["adv_g_edited"] = advs[1].detach()
        # The term enters through its known pixel gradient: the same gradient for everything upstream of
        # the decodes as weight * lam * adv, without a second backward pass through the critic (whose own
        # gradients the main player discards anyway). Its value is 0; ``adv_g`` reports the term itself.
        term = x_hat.new_zeros(())
        for fake, grad in zip(fakes, adv_grads):
            pull = self.config.weight * lam * grad  # (N, 3, H, W)
            term = term + (fake * pull).sum() - (fake.detach() * pull).sum()
        return term

    def critic_step(self, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The critic's hinge loss on ``real`` images (N, 3, H, W) and the last main step's decodes."""
        if self._fakes is None:
            raise RuntimeError("critic step before any main step: the loop steps the main player first")
        real_logits, fake_logits = self.critic(real), self.critic(self._fakes)
        loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        self._fakes = None
        return loss, {"critic_loss": loss.detach(), "critic_real": real_logits.mean().detach(),
                      "critic_fake": fake_logits.mean().detach()}
