"""Making a conditional VAE obey its condition (``model.constraint`` of the CVAE): the encoder of a plain CVAE
leaks the attributes into z, so the decoder learns to read them from z and to ignore the condition slot.

Two remedies from attribute-editing work, each optional (``configs/cvae_synth64.yaml`` uses the first; the
second did not help there, see README "Quality"):

* **Attribute-classification constraint** (AttGAN, He et al. 2019): every step also decodes the batch's z
  under a *changed* condition c' and asks a frozen attribute classifier to read c' from the decoded image
  (``targets``: ``random``, each attribute drawn anew, on or off with probability 1/2; or ``shuffled``,
  another face's condition from the same batch, as AttGAN's code does: only combinations faces have, which
  matters once the condition holds attributes that exclude each other, like hair colours)::

      loss += classifier_weight * sum over condition attributes of BCE(classifier(D(z, c')), c')

  The classifier is a trained ``classifier`` bundle (``constraint.classifier``), frozen, in eval mode and
  held outside the model's module tree like a perceptual loss's network (not in ``parameters()`` or
  ``state_dict()``; bundles stay self-contained). Its gradient reaches the decoder and the encoder, never
  the classifier. It must not be the benchmark's judge: ``facegen evaluate`` refuses a judge a model
  trained against (``facegen.quality.judge.classifiers_used``).

* **Adversary on z** (Fader networks, Lample et al. 2017): a small head tries to recover c from the
  posterior mean. It is its own player (``"adversary"``), trained on detached codes; the main player's
  term asks the encoder to leave the adversary at chance (target 1/2 for every attribute), computed with
  the adversary's weights detached, so it moves the encoder only::

      adversary:  BCE(adv(mu.detach()), c)            main:  loss += adversary_weight * BCE(adv*(mu), 1/2)

Both terms are in the units of the ELBO (nats per image), next to a reconstruction term of thousands: their
weights are of the order of a hundred (measured in ``bench/cvae_condition.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from facegen.errors import ConfigError
from facegen.io import absolute_path

KEY = "model.constraint"
ADVERSARY_HIDDEN = 128
TARGETS = ("random", "shuffled")


@dataclass(frozen=True)
class ConstraintConfig:
    """The ``model.constraint:`` section of a CVAE config (``condition: attrs`` only); all weights 0 = a plain CVAE.

    classifier: folder of a trained ``classifier`` bundle of the model's resolution that knows every
        condition attribute, the frozen reader of the changed-condition decodes (never the judge; relative
        paths are made absolute when the config is loaded; every Ray worker reads it at build time).
    classifier_weight: weight of its BCE on decodes under changed conditions (0 = off).
    adversary_weight: weight of the encoder's term against the z adversary (0 = off, and no adversary player).
    targets: the changed conditions the classifier must read: ``random`` (every attribute on or off with
        probability 1/2) or ``shuffled`` (another face's condition from the batch; see the module docstring).
    """

    classifier: str = ""
    classifier_weight: float = 0.0
    adversary_weight: float = 0.0
    targets: str = "random"

    def __post_init__(self) -> None:
        if self.classifier_weight < 0 or self.adversary_weight < 0:
            raise ConfigError(f"{KEY}.classifier_weight / adversary_weight: must be >= 0")
        if self.targets not in TARGETS:
            raise ConfigError(f"{KEY}.targets: must be one of {TARGETS}, got {self.targets!r}")
        if self.classifier_weight and not self.classifier:
            raise ConfigError(f"{KEY}.classifier: required when {KEY}.classifier_weight > 0 (a classifier "
                              "bundle that is not the judge)")
        object.__setattr__(self, "classifier", absolute_path(self.classifier))

    @property
    def active(self) -> bool:
        return bool(self.classifier_weight or self.adversary_weight)


def changed_conditions(cond: torch.Tensor, targets: str = "random") -> torch.Tensor:
    """cond (N, C) 0/1 -> the conditions to decode under instead: ``random``, each entry on with probability
    1/2 (about half of every attribute flips, in every combination with the others); ``shuffled``, the rows of
    ``cond`` in a random order (each face gets another face's condition: only combinations that occur)."""
    if targets == "shuffled":
        return cond[torch.randperm(cond.shape[0], device=cond.device)]
    return (torch.rand_like(cond) < 0.5).to(cond.dtype)


class FrozenAttributeReader:
    """The constraint's classifier: ``logits(images) -> (N, C)`` over the condition attributes, in order.

    A plain object, not an ``nn.Module``: a model attribute of this kind stays out of the model's parameters,
    state_dict, ``.to()`` and ``.train()``; it follows the images' device itself.
    """

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.columns: list[int] = []
        self._device = torch.device("cpu")

    def set_classifier(self, model: nn.Module, names: Sequence[str], key: str = f"{KEY}.classifier") -> None:
        """``model``: an attribute classifier (``logits`` and ``attribute_names``) knowing every one of ``names``."""
        known = list(getattr(model, "attribute_names", ()))
        if not hasattr(model, "logits") or not known:
            raise ConfigError(f"{key}: need an attribute classifier bundle (family classifier)")
        missing = [n for n in names if n not in known]
        if missing:
            raise ConfigError(f"{key}: the classifier does not predict {', '.join(missing)}")
        self.model, self.columns = model.requires_grad_(False).eval(), [known.index(n) for n in names]
        self._device = next(model.parameters()).device

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise ValueError("cvae constraint: the classifier is not loaded; build the model for training with "
                             "facegen.pretrained.build_for_training")
        if self._device != images.device:
            self.model.to(images.device)
            self._device = images.device
        return self.model.logits(images)[:, self.columns]


class ZAdversary(nn.Module):
    """posterior mean (N, latent_dim) -> condition logits (N, C)."""

    def __init__(self, latent_dim: int, condition_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, ADVERSARY_HIDDEN), nn.LeakyReLU(0.2),
                                 nn.Linear(ADVERSARY_HIDDEN, ADVERSARY_HIDDEN), nn.LeakyReLU(0.2),
                                 nn.Linear(ADVERSARY_HIDDEN, condition_dim))

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return self.net(mu)

    def frozen_logits(self, mu: torch.Tensor) -> torch.Tensor:
        """The same logits with this module's weights detached: a loss on them moves ``mu``'s producer only."""
        params = {name: p.detach() for name, p in self.named_parameters()}
        return functional_call(self, params, (mu,))

    def step(self, mu: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The adversary player's loss on detached codes, and how well it recovers the condition (the leak)."""
        logits = self(mu.detach())
        loss = F.binary_cross_entropy_with_logits(logits, cond, reduction="none").sum(1).mean()
        leak = ((logits > 0) == (cond > 0.5)).float().mean()
        return loss, {"adversary_loss": loss.detach(), "z_leak_acc": leak.detach()}

    def confusion_loss(self, mu: torch.Tensor) -> torch.Tensor:
        """The encoder's term: the frozen adversary's BCE toward 1/2 per image (N,); minimal at chance."""
        logits = self.frozen_logits(mu)
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 0.5), reduction="none").sum(1)


def classification_constraint(reader: FrozenAttributeReader, edited: torch.Tensor, target: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image BCE (N,) of the frozen classifier on ``edited`` images against ``target`` (N, C), and the
    fraction of entries it reads as asked (detached)."""
    logits = reader.logits(edited)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
    return bce, ((logits > 0) == (target > 0.5)).float().mean().detach()
