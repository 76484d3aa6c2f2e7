"""Feature trunks shared by the classifier families: a small GroupNorm CNN or a torchvision ImageNet network.

``build_backbone(config, resolution)`` returns ``(trunk, feature_dim)``; the trunk maps images
(N, 3, R, R) in [-1, 1] to features (N, feature_dim). Nothing is downloaded: torchvision networks are built
with ``weights=None`` and pretrained weights come only from a local ``state_dict`` file the user names.

Each trunk is cut into *blocks*, the unit of ``trainable_layers`` (only the last N blocks train):

    small_cnn     one block per stride-2 conv stage: 3 / 4 / 5 stages at 32 / 64 / 128 px
    resnet18      5 blocks: the stem (conv1, bn1, maxpool), layer1, layer2, layer3, layer4
    vgg16         5 blocks: the conv stages of ``features``, each ending in its max-pool
    inception_v3  12 blocks: the stem (Conv2d_1a .. Conv2d_4a with both max-pools), then each Mixed_* module

The ImageNet networks drop their classifier (resnet/inception ``fc``, VGG's whole ``classifier`` MLP, which
holds 120M of its 138M parameters) and end in global average pooling, so F = 512 / 512 / 2048.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facegen.errors import ConfigError
from facegen.models.base import FaceModel
from facegen.models.blocks import SUPPORTED_RESOLUTIONS, ConvEncoder

BACKBONES: tuple[str, ...] = ("small_cnn", "resnet18", "vgg16", "inception_v3")
# Smallest input side each network accepts; smaller images are upsampled to it (inception's stem and
# pooling need >= 75 px; the others work from 32 px).
MIN_INPUT = {"small_cnn": 32, "resnet18": 32, "vgg16": 32, "inception_v3": 75}
# State-dict key prefixes of the torchvision classifier heads, which the trunks do not have.
HEAD_PREFIXES = ("fc.", "classifier.", "AuxLogits.")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneConfig:
    """The ``model.backbone:`` section: which trunk, how it is initialised and how much of it trains.

    name: one of ``small_cnn`` (default, GroupNorm CNN from ``blocks.ConvEncoder``), ``resnet18``,
        ``vgg16``, ``inception_v3`` (the torchvision ones use BatchNorm, so their statistics depend on the
        per-worker batch).
    weights: local path of a ``state_dict`` file of the same torchvision network (or of a ConvEncoder for
        small_cnn), read with ``torch.load(weights_only=True)``; the classifier-head keys (``fc.*``,
        ``classifier.*``, ``AuxLogits.*``) are dropped, every other key must fit. Empty = random init.
        Every Ray worker reads the file at model build, so it must exist on every node; and a bundle's
        config keeps the path, so loading that bundle needs the file too unless the path is cleared.
    trainable_layers: -1 trains the whole trunk; N >= 0 trains only its last N blocks (see the module
        docstring) and freezes the rest (0 = linear probe: only the heads train). Frozen BatchNorm layers
        also keep their running statistics.
    input_size: side the images are resized to before the trunk; 0 = the data resolution, raised to the
        network's minimum (75 px for inception_v3). ImageNet weights see objects at 224 px (299 for
        inception_v3); upsampling to that recovers more of their accuracy but multiplies compute and
        activation memory by about the pixel ratio. Multiply-adds per image (forward): inception_v3 0.2 G
        at 75 px vs 5.7 G at 299; resnet18 0.15 G at 64 px vs 1.8 G at 224; vgg16 1.25 G vs 15.3 G.
    base_channels, max_channels: small_cnn only: first stage width, doubling per stage up to the cap.
    """

    name: str = "small_cnn"
    weights: str = ""
    trainable_layers: int = -1
    input_size: int = 0
    base_channels: int = 32
    max_channels: int = 256

    def __post_init__(self) -> None:
        if self.name not in BACKBONES:
            raise ConfigError(f"model.backbone.name: must be one of {BACKBONES}, got {self.name!r}")
        if self.trainable_layers < -1:
            raise ConfigError(f"model.backbone.trainable_layers: must be -1 (all) or >= 0, got {self.trainable_layers}")
        if self.input_size and self.input_size < MIN_INPUT[self.name]:
            raise ConfigError(f"model.backbone.input_size: {self.name} needs >= {MIN_INPUT[self.name]} px "
                              f"(or 0), got {self.input_size}")
        if self.name == "small_cnn" and self.input_size not in (0, *SUPPORTED_RESOLUTIONS):
            raise ConfigError(f"model.backbone.input_size: small_cnn takes 0 or one of {SUPPORTED_RESOLUTIONS}")
        if self.base_channels < 4 or self.max_channels < self.base_channels:
            raise ConfigError("model.backbone.base_channels / max_channels: need 4 <= base_channels <= max_channels")


class Backbone(nn.Module):
    """images (N, 3, R, R) in [-1, 1] -> features (N, feature_dim), through resize, normalisation, ``body``.

    ``blocks`` lists the body's freezable units in input-to-output order (plain list: the modules are
    registered once, under ``body``).
    """

    def __init__(self, body: nn.Module, blocks: list[nn.Module], feature_dim: int, input_size: int,
                 imagenet_normalize: bool) -> None:
        super().__init__()
        self.body = body
        self.blocks = blocks
        self.feature_dim = feature_dim
        self.input_size = input_size
        self.imagenet_normalize = imagenet_normalize
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.frozen: list[nn.Module] = []

    def freeze_all_but_last(self, trainable: int) -> None:
        """Freeze every block except the last ``trainable`` (-1 = freeze none)."""
        if trainable > len(self.blocks):
            raise ConfigError(f"model.backbone.trainable_layers: this trunk has {len(self.blocks)} blocks, "
                              f"got {trainable}")
        self.frozen = [] if trainable == -1 else self.blocks[:len(self.blocks) - trainable]
        for block in self.frozen:
            block.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for block in self.frozen:  # frozen BatchNorm keeps its (pretrained) running statistics
            block.eval()
        return self

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, R, R) in [-1, 1] -> the body's input (N, 3, input_size, input_size): resized and,
        for ImageNet weights, standardised. Running ``blocks`` in order on it gives the body's feature maps."""
        x = images
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.imagenet_normalize:  # torchvision's ResNet/VGG weights expect ImageNet-standardised [0, 1] input
            x = ((x + 1) / 2 - self.mean) / self.std
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(images))


def _small_cnn(config: BackboneConfig, size: int) -> tuple[nn.Module, list[nn.Module], int]:
    body = ConvEncoder(size, config.base_channels, config.max_channels)
    layers = list(body.net)[:-1]  # (conv, norm, act) per stage, then the Flatten
    blocks = [nn.Sequential(*layers[i:i + 3]) for i in range(0, len(layers), 3)]
    return body, blocks, body.feature_dim


# torchvision is imported inside the builders: importing it pulls in torch._dynamo (~3 s of CPU), which
# every process importing facegen.models (CLI, Ray workers of other families) would otherwise pay.


def _resnet18() -> tuple[nn.Module, list[nn.Module], int]:
    import torchvision

    body = torchvision.models.resnet18(weights=None)
    body.fc = nn.Identity()
    stem = nn.Sequential(body.conv1, body.bn1, body.relu, body.maxpool)
    return body, [stem, body.layer1, body.layer2, body.layer3, body.layer4], 512


def _vgg16() -> tuple[nn.Module, list[nn.Module], int]:
    import torchvision

    body = torchvision.models.vgg16(weights=None)
    body.avgpool, body.classifier = nn.AdaptiveAvgPool2d(1), nn.Identity()
    blocks, current = [], []
    for layer in body.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*current))
            current = []
    return body, blocks, 512


def _inception_v3(init_weights: bool) -> tuple[nn.Module, list[nn.Module], int]:
    import torchvision

    body = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=init_weights)
    body.fc, body.dropout = nn.Identity(), nn.Identity()  # the family's head owns dropout
    children = dict(body.named_children())
    stem = nn.Sequential(*(children[n] for n in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
                                                 "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2")))
    return body, [stem] + [m for n, m in children.items() if n.startswith("Mixed_")], 2048


def load_weights(body: nn.Module, path: str, name: str, key: str = "model.backbone.weights") -> None:
    """Load the local ``state_dict`` file ``path`` into ``body`` (head keys dropped); mismatches are ConfigErrors
    naming the config ``key`` that gave the path."""
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles, truncated or foreign files: all the user's to fix, in one line
        raise ConfigError(f"{key}: {path} is not a tensor file torch.load(weights_only=True) can read "
                          f"({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{key}: {path} does not hold a state_dict (a mapping of names to tensors)")
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    own = body.state_dict()
    problems = [(what, keys) for what, keys in (
        # Files older than PyTorch 0.4.1 lack BatchNorm's num_batches_tracked; BatchNorm fills it in.
        ("missing", [k for k in own if k not in state and not k.endswith("num_batches_tracked")]),
        ("unexpected", [k for k in state if k not in own]),
        ("wrong shape", [k for k in state if k in own and state[k].shape != own[k].shape]),
    ) if keys]
    if problems:
        detail = "; ".join(f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                           for what, keys in problems)
        raise ConfigError(f"{key}: {path} does not fit {name}: {detail}")
    body.load_state_dict(state)


def build_backbone(config: BackboneConfig, resolution: int) -> tuple[Backbone, int]:
    """The trunk for images of side ``resolution``: (module (N, 3, R, R) -> (N, F), F)."""
    size = config.input_size or max(resolution, MIN_INPUT[config.name])
    if config.name == "small_cnn":
        body, blocks, features = _small_cnn(config, size)
    elif config.name == "resnet18":
        body, blocks, features = _resnet18()
    elif config.name == "vgg16":
        body, blocks, features = _vgg16()
    else:  # torchvision's truncated-normal init takes ~4 s: skip it when a weights file overwrites it anyway
        body, blocks, features = _inception_v3(init_weights=not config.weights)
    # A ``weights`` file is loaded by the model's ``load_pretrained`` (facegen.pretrained), not here.
    # Google's inception weights expect [-1, 1] input (torchvision's transform_input maps to it); ResNet and
    # VGG weights expect ImageNet standardisation. small_cnn trains from [-1, 1] like the other families.
    trunk = Backbone(body, blocks, features, size, imagenet_normalize=config.name in ("resnet18", "vgg16"))
    trunk.freeze_all_but_last(config.trainable_layers)
    return trunk, features


class TrunkClassifier(FaceModel):
    """Base of the classifier families: a ``trunk`` (``build_backbone``) built from ``config.backbone``, whose
    ``weights`` file is loaded for training only and whose features other models may reuse."""

    trunk: Backbone

    def load_pretrained(self, loader: Any) -> None:
        backbone = self.config.backbone
        if backbone.weights:
            loader.backbone_weights(self.trunk, backbone.weights, backbone.name, "model.backbone.weights")

    @classmethod
    def export_config(cls, config: Any) -> Any:
        """The pretrained file is baked into the weights: loading the bundle does not need it."""
        return replace(config, backbone=replace(config.backbone, weights=""))

    def feature_trunk(self) -> nn.Module:
        return self.trunk
