"""Perceptual reconstruction loss (``recon_loss: perceptual``): distances between a frozen network's feature maps.

For images x_hat and x (N, 3, H, W) in [-1, 1] the per-image loss is::

    loss = weight * mean over layers l of  mean over (h, w) of  || u_l(x_hat)[:, h, w] - u_l(x)[:, h, w] ||^2
           + pixel_weight * pixel_loss(x_hat, x)

where u_l is the output of trunk block l divided, at every position, by its L2 norm over channels (LPIPS,
Zhang et al. 2018, without the learned per-channel weights). Each layer term lies in [0, 4] and is 0 for
identical images. Channel normalisation makes the distance blind to the overall scale of a feature vector,
so brightness and colour casts cost little: the pixel term keeps them in place (``pixel_weight: 0`` trains on
the perceptual term alone and drifts in colour).

The feature network is the convolutional trunk (see ``backbones.py``) of either our own trained classifier
(a ``classifier`` or ``fairface`` bundle) or a torchvision vgg16 / resnet18 whose weights the user saved to a
local file. It is frozen, kept in eval mode, and held *outside* the model's module tree: it is not in
``parameters()`` or ``state_dict()`` (bundles stay small, DDP never sees it). ``facegen.pretrained`` loads it
when it builds the model for training (the model's ``load_pretrained``); it follows the images' device, and a
bundle loads for inference without its file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facegen.errors import ConfigError
from facegen.io import absolute_path
from facegen.models.losses import PIXEL_LOSSES, reconstruction_loss

PERCEPTUAL_SOURCES = ("bundle", "torchvision")
PERCEPTUAL_ARCHS = ("vgg16", "resnet18")
KEY = "model.perceptual"


@dataclass(frozen=True)
class PerceptualConfig:
    """The ``model.perceptual:`` section of the AE / VAE / CVAE configs, read only with ``recon_loss: perceptual``.

    source: where the frozen feature network comes from: ``bundle`` (the trunk of a facegen ``classifier`` or
        ``fairface`` model bundle, e.g. one trained by configs/classifier_synth64.yaml) or ``torchvision``
        (an ``arch`` network with weights from a local ``state_dict`` file; nothing is downloaded).
    path: the bundle folder (source bundle) or the ``.pth`` state_dict file (source torchvision; the
        classifier-head keys are dropped). Relative paths are made absolute when the config is loaded. Read
        by every Ray worker at its first training step, so it must exist on every node; loading a trained
        model's bundle never reads it.
    arch: source torchvision only: ``vgg16`` or ``resnet18``. Images are resized to at least 32 px and
        standardised with the ImageNet mean and std these networks were trained with.
    layers: the trunk blocks (0-based, input to output; see ``backbones.py``: one per conv stage of a small
        CNN, 5 for vgg16 / resnet18) whose outputs are compared; empty = all of them. Early blocks see edges
        and texture, late ones parts and identity.
    weight: weight of the perceptual distance. Each layer term is in [0, 4], while a pixel MSE on the [0, 1]
        scale is typically a few thousandths: a weight of a few hundredths gives the two terms similar pull
        (measure it on your data with a short run; configs/vae_perceptual_synth64.yaml records ours).
    pixel_loss: ``mse``, ``l1`` or ``ssim``: the pixel term mixed in, which keeps colour and brightness
        (the channel-normalised features barely see them).
    pixel_weight: weight of the pixel term; 0 = perceptual alone (expect colour drift).
    """

    source: str = "bundle"
    path: str = ""
    arch: str = "vgg16"
    layers: tuple[int, ...] = ()
    weight: float = 0.02
    pixel_loss: str = "mse"
    pixel_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.source not in PERCEPTUAL_SOURCES:
            raise ConfigError(f"{KEY}.source: must be one of {PERCEPTUAL_SOURCES}, got {self.source!r}")
        if self.arch not in PERCEPTUAL_ARCHS:
            raise ConfigError(f"{KEY}.arch: must be one of {PERCEPTUAL_ARCHS}, got {self.arch!r}")
        if any(i < 0 for i in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"{KEY}.layers: must be distinct block indices >= 0, got {list(self.layers)}")
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ConfigError(f"{KEY}.pixel_loss: must be one of {PIXEL_LOSSES}, got {self.pixel_loss!r}")
        if self.weight < 0 or self.pixel_weight < 0 or self.weight + self.pixel_weight == 0:
            raise ConfigError(f"{KEY}.weight / pixel_weight: must be >= 0 and not both 0")
        object.__setattr__(self, "path", absolute_path(self.path))


def _unit_channels(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> each position's C-vector scaled to unit L2 norm (all-zero vectors stay 0; the epsilon
    inside the root keeps its gradient finite there)."""
    return features * torch.rsqrt(features.pow(2).sum(1, keepdim=True) + 1e-10)


class PerceptualLoss:
    """Callable ``(x_hat, x) -> (N,)`` per-image loss of the module docstring.

    A plain object, not an ``nn.Module``: assigned to a model attribute it stays out of the model's
    parameters, state_dict, ``.to()`` and ``.train()``; it follows the images' device itself.
    """

    def __init__(self, config: PerceptualConfig, resolution: int) -> None:
        self.config = config
        self.resolution = resolution
        self._trunk: nn.Module | None = None
        self._device: torch.device | None = None

    def set_trunk(self, trunk: nn.Module) -> None:
        """The frozen feature network (from ``facegen.pretrained.Loader.feature_trunk``)."""
        self._trunk, self._device = trunk, torch.device("cpu")

    def feature_trunk(self, device: torch.device) -> nn.Module:
        """The frozen trunk on ``device``."""
        if self._trunk is None:
            raise ValueError("recon_loss perceptual: the feature network is not loaded; build the model for "
                             "training with facegen.pretrained.build_for_training")
        if self._device != device:
            self._trunk.to(device)
            self._device = device
        return self._trunk

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (N, 3, H, W) in [-1, 1] -> the chosen blocks' outputs, each (N, C_l, h_l, w_l)."""
        trunk = self.feature_trunk(images.device)
        layers = set(self.config.layers or range(len(trunk.blocks)))
        x, out = trunk.prepare(images), []
        for i, block in enumerate(trunk.blocks[:max(layers) + 1]):
            x = block(x)
            if i in layers:
                out.append(x)
        return out

    def distance(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The perceptual term alone, per image: (N,), 0 for identical images. Gradients flow to ``x_hat``."""
        with torch.no_grad():  # the target needs no graph
            targets = self.feature_maps(x)
        per_layer = [(_unit_channels(a) - _unit_channels(b)).pow(2).sum(1).flatten(1).mean(1)
                     for a, b in zip(self.feature_maps(x_hat), targets)]
        return torch.stack(per_layer).mean(0)

    @property
    def loaded(self) -> bool:
        return self._trunk is not None

    def __call__(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # A bundle loaded for inference (`facegen report`) has no feature network: with no gradient to take, its
        # loss is the pixel term alone (weight 1 if it has none); training without the network still fails
        terms = []
        if self.config.weight and (self.loaded or torch.is_grad_enabled()):
            terms.append(self.config.weight * self.distance(x_hat, x).float())
        if self.config.pixel_weight or not terms:
            terms.append((self.config.pixel_weight or 1.0) * reconstruction_loss(self.config.pixel_loss, x_hat, x))
        return sum(terms[1:], terms[0])


def make_perceptual_loss(config) -> PerceptualLoss | None:
    """The family's perceptual loss when ``recon_loss: perceptual`` (its network loads at first use), else None."""
    return PerceptualLoss(config.perceptual, config.resolution) if config.recon_loss == "perceptual" else None


def load_perceptual_trunk(loss: PerceptualLoss | None, config, loader) -> None:
    """A family's ``load_pretrained`` step for its perceptual loss (nothing to do without one)."""
    if loss is not None:
        loss.set_trunk(loader.feature_trunk(config.perceptual, config.resolution))
