"""Deterministic autoencoder (latent 200 by default) with a conv encoder or a trained classifier's trunk.

It has no prior to sample from; new faces come from the PCA + kernel-density sampler of the latent-analysis
package, fitted on encoded training images. Being deterministic, it is also the model the harness tests use
to compare a 2-worker DDP run with a 1-worker run exactly.

``encoder: classifier`` encodes with the convolutional trunk of a trained ``classifier`` / ``fairface`` model
(see ``backbones.py``): features (N, F) -> linear -> z (N, latent_dim); the decoder stays the conv decoder.
The trunk's weights are copied from the classifier bundle when the model is built for training
(``facegen.pretrained``) and are then part of this model's state_dict, so its own bundle is self-contained
(:meth:`Autoencoder.export_config` swaps the bundle path for the trunk's architecture). Frozen
(``encoder_trainable: false``), the trunk stays in eval mode and out of the optimizer: the code is a linear
read-out of what the classifier sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from facegen.errors import ConfigError
from facegen.io import absolute_path
from facegen.models.adversarial import AdversarialConfig, PatchAdversary
from facegen.models.backbones import BackboneConfig, build_backbone
from facegen.models.base import Batch, LatentModel, LatentPart, StepOutput
from facegen.models.blocks import ConvDecoder, ConvEncoder, check_conv_autoencoder_fields
from facegen.models.losses import mse_per_image, reconstruction_loss, ssim_per_image
from facegen.models.perceptual import PerceptualConfig, load_perceptual_trunk, make_perceptual_loss

ENCODERS = ("conv", "classifier")


@dataclass(frozen=True)
class AEConfig:
    """The ``model:`` section of an autoencoder config.

    resolution: image side (32, 64 or 128); must match the shards.
    latent_dim: width of the code.
    base_channels, max_channels: width of the first conv stage, doubling per stage up to the cap (of the
        decoder, and of the encoder when it is ``conv``).
    decoder_res_blocks: residual blocks after each of the decoder's upsampling stages (0 = one conv each).
    recon_loss: ``mse``, ``l1``, ``ssim`` or ``perceptual`` (see ``perceptual.py``).
    perceptual: the ``model.perceptual.*`` settings, read only with ``recon_loss: perceptual``.
    encoder: ``conv`` (the decoder's mirror) or ``classifier`` (a classifier's trunk, see the module docstring).
    encoder_bundle: ``classifier`` only: folder of a ``classifier`` / ``fairface`` bundle of the same
        resolution whose trunk is copied in when the model is built for training (relative paths are made
        absolute when the config is loaded; every Ray worker reads it). The exported bundle replaces it by
        ``encoder_backbone`` and no longer needs it.
    encoder_backbone: ``classifier`` only, instead of ``encoder_bundle``: the trunk's architecture
        (``model.encoder_backbone.name`` ...), as an exported bundle records it; set by hand it builds that
        trunk from random init or from its torchvision ``weights`` file.
    encoder_trainable: false = the trunk is frozen (no gradient, eval-mode normalisation statistics, not in
        the optimizer); true = it is fine-tuned with the decoder (all of it, or the last
        ``encoder_backbone.trainable_layers`` blocks).
    adversarial: the ``model.adversarial.*`` settings: a patch critic whose hinge loss sharpens the decodes
        (``adversarial.py``); ``weight: 0`` (the default) = off.
    """

    resolution: int = 64
    latent_dim: int = 200
    base_channels: int = 32
    max_channels: int = 256
    decoder_res_blocks: int = 0
    recon_loss: str = "mse"
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    encoder: str = "conv"
    encoder_bundle: str = ""
    encoder_backbone: BackboneConfig | None = None
    encoder_trainable: bool = False
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def __post_init__(self) -> None:
        check_conv_autoencoder_fields(self)
        if self.encoder not in ENCODERS:
            raise ConfigError(f"model.encoder: must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder == "conv" and (self.encoder_bundle or self.encoder_backbone is not None):
            raise ConfigError("model.encoder_bundle / encoder_backbone: only used with model.encoder: classifier")
        if self.encoder == "classifier" and not self.encoder_bundle and self.encoder_backbone is None:
            raise ConfigError("model.encoder_bundle: encoder classifier needs encoder_bundle (a classifier "
                              "bundle) or encoder_backbone (the trunk architecture an export records)")
        object.__setattr__(self, "encoder_bundle", absolute_path(self.encoder_bundle))


def classifier_trunk(config: AEConfig) -> tuple[nn.Module, int]:
    """The encoder trunk of ``encoder: classifier`` (a ``backbones.Backbone``, (N, 3, R, R) -> (N, F)) and F,
    built from ``encoder_backbone`` (weights come later, in ``load_pretrained``), frozen unless
    ``encoder_trainable``."""
    if config.encoder_backbone is None:
        raise ValueError("ae: encoder_bundle names the trunk but not its architecture; build the model with "
                         "facegen.pretrained.build_for_training, which reads it from the bundle")
    trunk, features = build_backbone(config.encoder_backbone, config.resolution)
    if not config.encoder_trainable:
        trunk.freeze_all_but_last(0)  # every block frozen and kept in eval mode by Backbone.train
        trunk.requires_grad_(False)
    return trunk, features


class Autoencoder(LatentModel):
    """images -> z (N, latent_dim) -> images, trained on the chosen reconstruction loss."""

    family = "ae"
    config_class = AEConfig
    needs_fitted_sampler = True

    def __init__(self, config: AEConfig) -> None:
        super().__init__(config)
        if config.encoder == "classifier":
            self.encoder, features = classifier_trunk(config)
        else:
            self.encoder = ConvEncoder(config.resolution, config.base_channels, config.max_channels)
            features = self.encoder.feature_dim
        self.to_code = nn.Linear(features, config.latent_dim)
        self.decoder = ConvDecoder(config.resolution, config.latent_dim, config.base_channels, config.max_channels,
                                   res_blocks=config.decoder_res_blocks)
        self.latent_parts = (LatentPart("z", config.latent_dim, "gaussian"),)
        self.perceptual = make_perceptual_loss(config)  # a plain object: not a submodule, not in state_dict
        self.adversarial = PatchAdversary(config.adversarial) if config.adversarial.active else None
        if self.adversarial is not None:
            self.players = ("main", PatchAdversary.player)
            self.player_networks[PatchAdversary.player] = self.adversarial

    @classmethod
    def resolve_config(cls, config: AEConfig, loader) -> AEConfig:
        """An ``encoder_bundle`` gives the trunk's architecture; the AE's ``encoder_trainable`` (not the
        classifier's own ``trainable_layers``) then says what trains."""
        if config.encoder != "classifier" or not config.encoder_bundle or config.encoder_backbone is not None:
            return config
        bundle = loader.feature_bundle(config.encoder_bundle, "model.encoder_bundle", config.resolution)
        backbone = replace(bundle.config.model.backbone, weights="", trainable_layers=-1)
        return replace(config, encoder_backbone=backbone)

    @classmethod
    def export_config(cls, config: AEConfig) -> AEConfig:
        """The trunk's weights are in the bundle: ``encoder_bundle`` gives way to the architecture alone."""
        if config.encoder != "classifier":
            return config
        return replace(config, encoder_bundle="", encoder_backbone=replace(config.encoder_backbone, weights=""))

    def load_pretrained(self, loader) -> None:
        config = self.config
        if config.encoder == "classifier" and config.encoder_bundle:
            source = loader.feature_bundle(config.encoder_bundle, "model.encoder_bundle", config.resolution)
            if source.config.model.backbone.name != config.encoder_backbone.name:
                raise ConfigError(f"model.encoder_backbone: {config.encoder_backbone.name} but encoder_bundle's trunk "
                                  f"is {source.config.model.backbone.name}; give one of them")
            self.encoder.load_state_dict(source.model.feature_trunk().state_dict())
        elif config.encoder == "classifier" and config.encoder_backbone.weights:
            loader.backbone_weights(self.encoder, config.encoder_backbone.weights, config.encoder_backbone.name,
                                    "model.encoder_backbone.weights")
        load_perceptual_trunk(self.perceptual, config, loader)

    def set_epoch(self, epoch: int) -> None:
        if self.adversarial is not None:
            self.adversarial.set_epoch(epoch)

    def forward(self, batch: Batch, player: str = "main") -> StepOutput:
        x = batch["image"]
        if player == PatchAdversary.player:
            return StepOutput(*self.adversarial.critic_step(x))
        x_hat = self.decode(self.encode(x))
        recon = reconstruction_loss(self.config.recon_loss, x_hat, x, self.perceptual).mean()
        metrics = {"recon_mse": mse_per_image(x_hat, x).mean().detach(),
                   "ssim": ssim_per_image(x_hat.detach(), x).mean()}
        loss = recon
        if self.adversarial is not None:
            loss = loss + self.adversarial.generator_term(x_hat, recon, metrics)
        return StepOutput(loss, {"loss": loss.detach(), **metrics})

    def encode(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """images (N, 3, R, R) in [-1, 1] -> z (N, latent_dim)."""
        return self.to_code(self.encoder(images))

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z)
