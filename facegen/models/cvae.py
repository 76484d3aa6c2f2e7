"""Conditional VAE (Sohn et al. 2015): a VAE whose encoder and decoder both see a given condition c.

The condition is either a vector of chosen CelebA attributes (``condition: attrs``, read from
``batch["attrs"]``) or the one-hot of a class (``condition: label``, e.g. the digit of a digits image).
The encoder gets c as extra constant image channels, the decoder as extra inputs next to z, so z only has
to carry what c does not say (pose, lighting, handwriting style). The loss is the VAE's (see ``vae.py``)::

    loss = recon_scale * recon(x_hat, x) + beta * KL(q(z | x, c) || N(0, I))

As a :class:`LatentModel` the latent vector is ``[z, c]`` (parts ``z`` and ``condition``): ``encode`` needs
c and appends it, ``decode`` reads c from the vector unless given explicitly, so decoding the same z under
other conditions is one call (:meth:`~facegen.models.base.LatentModel.decode_all_conditions`).

Left alone, the encoder also writes the attributes into z and the decoder learns to read them there, ignoring
the condition slot; ``model.constraint`` (``condition_constraint.py``) adds an attribute-classification
constraint on decodes under changed conditions and an adversary on z that make it obey.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.errors import ConfigError
from facegen.models.adversarial import AdversarialConfig, PatchAdversary
from facegen.models.base import Batch, LatentModel, LatentPart, StepOutput
from facegen.models.blocks import ConvDecoder, ConvEncoder, check_vae_fields
from facegen.models.condition_constraint import (ConstraintConfig, FrozenAttributeReader, ZAdversary,
                                                 changed_conditions, classification_constraint)
from facegen.models.losses import (full_precision, gaussian_kl, mse_per_image, reconstruction_loss,
                                   warmed_up_beta)
from facegen.models.perceptual import PerceptualConfig, load_perceptual_trunk, make_perceptual_loss

CONDITIONS = ("attrs", "label")


@dataclass(frozen=True)
class CVAEConfig:
    """The ``model:`` section of a conditional VAE config.

    resolution: image side (32, 64 or 128); must match the shards.
    latent_dim: width of z (the condition comes on top).
    base_channels, max_channels: width of the first conv stage, doubling per stage up to the cap.
    decoder_res_blocks: residual blocks after each of the decoder's upsampling stages (0 = one conv each).
    beta: KL weight, as in the VAE.
    decoder_std: standard deviation of the Gaussian decoder on the [0, 1] pixel scale (see ``vae.py``).
    kl_warmup_epochs: epochs over which beta ramps linearly from 0 (0 = no warm-up).
    recon_loss: ``mse``, ``l1``, ``ssim`` or ``perceptual`` (see ``vae.py`` and ``perceptual.py``).
    perceptual: the ``model.perceptual.*`` settings, read only with ``recon_loss: perceptual``.
    condition: ``attrs`` (CelebA attributes from ``batch["attrs"]``, 40 columns in CelebA order) or
        ``label`` (one-hot of ``batch["label"]``; a missing label, -1, is the all-zero condition).
    condition_attributes: ``attrs`` only: the CelebA attribute names to condition on, in this order.
    num_classes: ``label`` only: number of classes (10 for digits).
    constraint: the ``model.constraint.*`` settings that make the decoder obey the condition (``attrs``
        only): a frozen classifier reading decodes under changed conditions, an adversary on z (see
        ``condition_constraint.py``); all weights 0 (the default) = the plain CVAE.
    adversarial: the ``model.adversarial.*`` settings: a patch critic whose hinge loss sharpens the decodes
        (``adversarial.py``); ``weight: 0`` (the default) = off.
    """

    resolution: int = 64
    latent_dim: int = 32
    base_channels: int = 32
    max_channels: int = 256
    decoder_res_blocks: int = 0
    beta: float = 1.0
    decoder_std: float = 0.1
    kl_warmup_epochs: int = 0
    recon_loss: str = "mse"
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    condition: str = "attrs"
    condition_attributes: tuple[str, ...] = ("Male", "Smiling", "Eyeglasses", "Young")
    num_classes: int = 10
    constraint: ConstraintConfig = field(default_factory=ConstraintConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def __post_init__(self) -> None:
        check_vae_fields(self)
        if self.condition not in CONDITIONS:
            raise ConfigError(f"model.condition: must be one of {CONDITIONS}, got {self.condition!r}")
        if self.condition == "attrs":
            if not self.condition_attributes:
                raise ConfigError("model.condition_attributes: name at least one CelebA attribute")
            for name in self.condition_attributes:
                if name not in CELEBA_ATTRIBUTES:
                    raise ConfigError(f"model.condition_attributes: unknown CelebA attribute {name!r}")
        elif self.num_classes < 2:
            raise ConfigError(f"model.num_classes: must be >= 2, got {self.num_classes}")
        if self.constraint.active and self.condition != "attrs":
            raise ConfigError("model.constraint: only for condition: attrs (the classifier reads attributes)")
        if self.adversarial.edits and not self.constraint.classifier_weight:
            raise ConfigError("model.adversarial.edits: the edits are the constraint's decodes under changed "
                              "conditions: set model.constraint.classifier_weight > 0 (and its classifier)")

    @property
    def condition_dim(self) -> int:
        return len(self.condition_attributes) if self.condition == "attrs" else self.num_classes


class CVAE(LatentModel):
    """Convolutional conditional VAE; latent vector ``[z (latent_dim), condition (condition_dim)]``."""

    family = "cvae"
    config_class = CVAEConfig

    def __init__(self, config: CVAEConfig) -> None:
        super().__init__(config)
        c = config.condition_dim
        self.encoder = ConvEncoder(config.resolution, config.base_channels, config.max_channels, in_channels=3 + c)
        self.to_posterior = nn.Linear(self.encoder.feature_dim, 2 * config.latent_dim)
        self.decoder = ConvDecoder(config.resolution, config.latent_dim + c, config.base_channels,
                                   config.max_channels, res_blocks=config.decoder_res_blocks)
        self.recon_scale = 3 * config.resolution**2 / (2 * config.decoder_std**2)
        self.latent_parts = (LatentPart("z", config.latent_dim, "gaussian"),
                             LatentPart("condition", c, "condition"))
        # A buffer, so it follows the model to the GPU: a Python list indexing a CUDA tensor is copied from
        # host memory on every step, and that copy makes the host wait for the device.
        index = [CELEBA_ATTRIBUTES.index(name) for name in config.condition_attributes]
        self.register_buffer("attr_index", torch.tensor(index, dtype=torch.long), persistent=False)
        # A buffer, not a float: a compiled step (train.compile) would recompile each time a float changed.
        self.register_buffer("beta_now", torch.tensor(config.beta if config.kl_warmup_epochs == 0 else 0.0),
                             persistent=False)
        self.perceptual = make_perceptual_loss(config)  # a plain object: not a submodule, not in state_dict
        constraint = config.constraint
        # Like the perceptual network, the frozen classifier is a plain object outside the module tree.
        self.reader = FrozenAttributeReader() if constraint.classifier_weight else None
        self.adversary = ZAdversary(config.latent_dim, c) if constraint.adversary_weight else None
        self.adversarial = PatchAdversary(config.adversarial) if config.adversarial.active else None
        # The z adversary and the patch critic each train alone; the main player everything else.
        networks = {"adversary": self.adversary, PatchAdversary.player: self.adversarial}
        self.player_networks.update((name, net) for name, net in networks.items() if net is not None)
        self.players = ("main", *self.player_networks)

    def condition_of(self, batch: Batch) -> torch.Tensor:
        """The batch's condition vectors: (N, condition_dim) float."""
        if self.config.condition == "label":
            labels = batch["label"]
            onehot = F.one_hot(labels.clamp(min=0), self.config.num_classes).float()
            return onehot * (labels >= 0).unsqueeze(1)  # unknown label: all-zero condition
        attrs = batch["attrs"]
        if attrs.shape[1] != len(CELEBA_ATTRIBUTES):
            raise ValueError(f"cvae: batch attrs has {attrs.shape[1]} columns; condition_attributes index "
                             f"the {len(CELEBA_ATTRIBUTES)} CelebA attributes")
        return attrs[:, self.attr_index].float()

    def condition_attributes(self) -> tuple[str, ...]:
        return self.config.condition_attributes if self.config.condition == "attrs" else ()

    def conditions(self) -> torch.Tensor:
        """The conditions a report shows, (K, condition_dim): every class one-hot (``label``), or no
        attribute then each attribute alone (``attrs``; combinations can be passed to the methods below)."""
        device = self.to_posterior.weight.device
        eye = torch.eye(self.config.condition_dim, device=device)
        return eye if self.config.condition == "label" else torch.cat([eye[:1] * 0, eye])

    def posterior(self, images: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (N, 3, H, W), cond (N, C) -> (mu, logvar), each (N, latent_dim)."""
        planes = cond[:, :, None, None].expand(-1, -1, *images.shape[2:])
        mu, logvar = full_precision(self.to_posterior(self.encoder(torch.cat([images, planes], 1)))).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)  # keeps exp(logvar) finite early in training

    def forward(self, batch: Batch, player: str = "main") -> StepOutput:
        if player not in self.players:
            raise ValueError(f"cvae: unknown player {player!r} (players: {', '.join(self.players)})")
        x, cond = batch["image"], self.condition_of(batch)
        if player == "adversary":  # learns to read the condition from codes it cannot change
            with torch.no_grad():
                mu = self.posterior(x, cond)[0]
            loss, metrics = self.adversary.step(mu, cond)
            return StepOutput(loss, metrics)
        if player == PatchAdversary.player:
            return StepOutput(*self.adversarial.critic_step(x))
        mu, logvar = self.posterior(x, cond)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        x_hat = self.decoder(torch.cat([z, cond], 1))
        recon = self.recon_scale * reconstruction_loss(self.config.recon_loss, x_hat, x, self.perceptual)  # (N,)
        kl = gaussian_kl(mu, logvar)
        per_image = recon + self.beta_now * kl
        metrics = {"recon_mse": mse_per_image(x_hat, x).mean().detach(), "kl": kl.mean().detach()}
        constraint = self.config.constraint
        # The same z under changed conditions must read as those conditions. A bundle loaded for inference
        # (`facegen report`) has no reader: with no gradient to take, its loss is the ELBO alone
        edited = None
        if self.reader is not None and (self.reader.loaded or torch.is_grad_enabled()):
            target = changed_conditions(cond, constraint.targets)
            edited = self.decoder(torch.cat([z, target], 1))  # (N, 3, H, W)
            bce, agree = classification_constraint(self.reader, edited, target)
            per_image = per_image + constraint.classifier_weight * bce
            metrics.update(edit_bce=bce.mean().detach(), edit_acc=agree)
        if self.adversary is not None:  # and z must not tell the adversary the condition
            confusion = self.adversary.confusion_loss(mu)
            per_image = per_image + constraint.adversary_weight * confusion
            metrics["z_confusion"] = confusion.mean().detach()
        loss = per_image.mean()
        if self.adversarial is not None:
            shown = edited if self.config.adversarial.edits else None
            loss = loss + self.adversarial.generator_term(x_hat, recon.mean(), metrics, shown)
        return StepOutput(loss, {"loss": loss.detach(), **metrics})

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Sampled-z loss plus the posterior-mean reconstruction error (what a user sees), and the z
        adversary's recovery of the condition when there is one."""
        metrics = self(batch).metrics
        if self.adversary is not None:
            metrics.update(self(batch, player="adversary").metrics)
        x, cond = batch["image"], self.condition_of(batch)
        metrics["recon_mse_mean_z"] = mse_per_image(self.decode(self.encode(x, cond)), x).mean()
        return metrics

    def set_epoch(self, epoch: int) -> None:
        self.beta_now.fill_(warmed_up_beta(self.config, epoch))
        if self.adversarial is not None:
            self.adversarial.set_epoch(epoch)

    def load_pretrained(self, loader) -> None:
        load_perceptual_trunk(self.perceptual, self.config, loader)
        if self.reader is not None:
            key = "model.constraint.classifier"
            bundle = loader.feature_bundle(self.config.constraint.classifier, key, self.config.resolution)
            self.reader.set_classifier(bundle.model, self.config.condition_attributes, key)

    # LatentModel
    def encode(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """images (N, 3, H, W), cond (N, C) -> [posterior mean, cond] (N, latent_dim + C)."""
        if cond is None:
            raise ValueError("cvae: encode needs the images' condition (see CVAE.condition_of)")
        return torch.cat([self.posterior(images, cond)[0], cond], 1)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, latent_dim + C) -> images (N, 3, H, W); a given cond (N, C) replaces z's condition part,
        and then z may also be just the (N, latent_dim) noise part."""
        d = self.config.latent_dim
        if cond is None:
            if z.shape[1] != d + self.config.condition_dim:
                raise ValueError(f"cvae: decode without cond needs z of width {d + self.config.condition_dim}")
            return self.decoder(z)
        return self.decoder(torch.cat([z[:, :d], cond], 1))

    def sample(self, n: int, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from N(0, I) noise under ``cond`` (n, C), or under conditions drawn uniformly from
        :meth:`conditions` when none is given."""
        device = self.to_posterior.weight.device
        z = torch.randn(n, self.config.latent_dim, generator=generator).to(device)
        if cond is None:
            options = self.conditions()
            cond = options[torch.randint(len(options), (n,), generator=generator).to(device)]
        return self.decode(z, cond)
