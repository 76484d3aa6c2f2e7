"""Weights that a model config names on disk, read by whoever builds a model for training, never by a model.

Three kinds of file feed a model from outside its own bundle: a classifier/FairFace bundle whose trunk becomes
an AE's encoder (``model.encoder_bundle``), the frozen feature network of a perceptual loss
(``model.perceptual.path``), and a torchvision ``state_dict`` a backbone starts from (``*.weights``).
:func:`build_for_training` resolves the config (an AE's trunk architecture comes from its bundle), builds the
model and hands it a :class:`Loader` through ``FaceModel.load_pretrained``; a model bundle is self-contained
and loads without any of these files (``facegen.bundle.load_bundle`` never calls this module).

Keeping the reads here is what keeps ``facegen.models`` free of ``facegen.bundle``: no import cycle.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from torch import nn

from facegen.bundle import Bundle, load_bundle
from facegen.errors import ConfigError, FacegenError
from facegen.models import FaceModel, build_model, family_of, model_class
from facegen.models.backbones import Backbone, BackboneConfig, build_backbone, load_weights
from facegen.models.perceptual import PerceptualConfig


class Loader:
    """Reads the files a config names; every failure is a one-line ConfigError naming the config key."""

    def feature_bundle(self, path: str, key: str, resolution: int | None = None) -> Bundle:
        """The model bundle at ``path`` whose model has a feature trunk (a classifier or FairFace model)."""
        try:
            bundle = load_bundle(path)
        except FacegenError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if bundle.model.feature_trunk() is None:
            raise ConfigError(f"{key}: {path} is a {bundle.config.family!r} bundle; need a model with a feature "
                              "trunk (a classifier or fairface bundle)")
        if resolution is not None and bundle.config.model.resolution != resolution:
            raise ConfigError(f"{key}: {path} is a {bundle.config.model.resolution} px classifier but "
                              f"model.resolution is {resolution}; they must match")
        return bundle

    def backbone_weights(self, trunk: Backbone, path: str, name: str, key: str) -> None:
        """Load a torchvision ``state_dict`` file into ``trunk``'s body (head keys dropped)."""
        load_weights(trunk.body, path, name, key=key)

    def feature_trunk(self, config: PerceptualConfig, resolution: int, key: str = "model.perceptual") -> nn.Module:
        """The frozen, eval-mode trunk a perceptual loss compares features in, on the CPU."""
        if not config.path:
            raise ConfigError(f"{key}.path: required when model.recon_loss is perceptual")
        if config.source == "bundle":
            trunk = self.feature_bundle(config.path, f"{key}.path").model.feature_trunk()
        else:
            if not os.path.isfile(config.path):  # before building the network: a typo should fail fast
                raise ConfigError(f"{key}.path: file not found: {config.path}")
            trunk, _ = build_backbone(BackboneConfig(name=config.arch), resolution)
            load_weights(trunk.body, config.path, config.arch, key=f"{key}.path")
        if config.layers and max(config.layers) >= len(trunk.blocks):
            raise ConfigError(f"{key}.layers: this trunk has {len(trunk.blocks)} blocks "
                              f"(0..{len(trunk.blocks) - 1}), got {list(config.layers)}")
        return trunk.requires_grad_(False).eval()


def resolve(model_config: Any, loader: Loader | None = None) -> Any:
    """``model_config`` completed from the files it names (e.g. an AE's trunk architecture from its bundle)."""
    return model_class(family_of(model_config)).resolve_config(model_config, loader or Loader())


def build_for_training(model_config: Any) -> FaceModel:
    """The model of ``model_config`` with every pretrained piece it names loaded (weights, feature nets)."""
    loader = Loader()
    model = build_model(resolve(model_config, loader))
    model.load_pretrained(loader)
    return model


def export_config(model_config: Any) -> Any:
    """What a bundle records instead of ``model_config``: its weights hold what the named files held, so
    loading the bundle needs none of them (file paths cleared, architectures kept)."""
    resolved = resolve(model_config)
    exported = model_class(family_of(resolved)).export_config(resolved)
    backbone = getattr(exported, "backbone", None)
    if isinstance(backbone, BackboneConfig) and backbone.weights:
        exported = replace(exported, backbone=replace(backbone, weights=""))
    return exported
