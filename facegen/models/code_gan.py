"""What InfoGAN and BEGAN share: the code layout and its recovery heads, the generator, the info step and the
per-player optimizer settings, the discriminator's augmentation and the generator's running average
(:class:`CodeGAN`). The code-vs-class accuracy both report lives in ``code_accuracy.py``.

InfoGAN (``infogan.py``) reads the codes from its discriminator trunk, BEGAN (``began.py``) from its
autoencoder's bottleneck; the info loss and the latent layout are the same (see ``infogan.py``'s docstring).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegen.errors import ConfigError
from facegen.models.base import Batch, LatentModel, LatentPart, OptimizerSettings, StepOutput
from facegen.models.blocks import SUPPORTED_RESOLUTIONS, ConvDecoder
from facegen.models.code_accuracy import matched_mass, predicted_categories
from facegen.models.gan_augment import POLICIES, diff_augment, jitter
from facegen.models.losses import full_precision, paired_assignment_information

HEAD_WIDTH = 128  # hidden width of the code and noise heads (InfoGAN's Q network uses 128)


@dataclass(frozen=True)
class InfoGANConfig:
    """The ``model:`` section of an InfoGAN config (BEGAN's config extends it).

    resolution: image side (32, 64 or 128); must match the shards.
    base_channels, max_channels: width of the first conv stage, doubling per stage up to the cap.
    noise_dim: width of the Gaussian noise part of the latent.
    categorical: sizes of the categorical codes, e.g. [10] (empty = none).
    continuous: number of continuous codes, uniform in [-1, 1] (e.g. 2 to 4).
    lambda_categorical, lambda_continuous, lambda_noise: weights of the info loss's cross-entropy,
        Gaussian negative log-likelihood and noise mean squared error.
    fixed_std: read each continuous code as a Gaussian of std 1 around the head's mean instead of learning
        the std too, as Chen et al.'s code does by default. A learned std shrinks as soon as the continuous codes
        are read well; their NLL's gradients then grow as 1/std^2 and, through Adam's per-weight scaling, leave
        the categorical code unlearnt (on 64 px faces: code read back at chance, 0.10, after 4 epochs).
    info_augment: strength of a random shift (up to this fraction of the side), zoom (1 +- it) and rotation
        (+- it x 90 degrees) given to each generated image before the code heads read it in the info step
        (Elastic-InfoGAN, Ojha et al. 2019): a code that must survive identity-preserving changes cannot
        hide in position, size or slant, which leaves the class; 0 = off. Used by the info player only.
    real_info: weight of a term on *real* images in the info step: the mutual information between the first
        categorical code read from two randomly jittered views of each image (IIC, Ji et al. 2019). It makes
        the code heads sort real images into confident, balanced groups that survive a small shift, zoom and
        rotation, so the code the generator must keep readable is tied to how the data cluster (on digits: the
        digit) rather than to whatever the generator first found; no labels. 0 = off (Chen et al.).
    real_jitter: strength of the jitter (as ``info_augment``) that makes the two views for ``real_info``.
    real_overcluster: with ``real_info``, an auxiliary head sorting real images the same way into this many
        groups (IIC's overclustering: finer groups shape the trunk's features past the coarse optimum where
        two classes share a code); 0 = none. Not part of the latent.
    info_in_steps: add the info loss to the generator's and the discriminator's own steps, as Chen et al.'s
        code does (one Adam per network, so the adversarial and info gradients share its scaling), instead of
        a third "info" player with its own Adam and ``lr_info`` (InfoGAN only).
    diff_augment: DiffAugment ops (``gan_augment.POLICIES``: color, translation, cutout) applied to real and
        generated images alike wherever the discriminator judges them, in its step and the generator's: it
        keeps a discriminator from memorising a few thousand faces (Zhao et al. 2020); empty = off.
    generator_ema: decay of a running average of the generator's weights, updated after every batch, which
        ``decode`` and ``sample`` use (Karras et al. 2018, Yazici et al. 2019: the average of a GAN's
        oscillating iterates draws better than the last one); the first steps average over fewer, as
        min(decay, (1 + t) / (10 + t)); 0 = off.
    lr_generator, lr_discriminator, lr_info: each player's learning rate; null = ``train.lr``.
    betas: Adam betas of every player, e.g. [0.5, 0.999] as usual for GANs; null = ``train.betas``.
    """

    resolution: int = 64
    base_channels: int = 32
    max_channels: int = 256
    noise_dim: int = 62
    categorical: tuple[int, ...] = (10,)
    continuous: int = 2
    lambda_categorical: float = 1.0
    lambda_continuous: float = 0.5
    lambda_noise: float = 0.5
    fixed_std: bool = False
    info_augment: float = 0.0
    real_info: float = 0.0
    real_jitter: float = 0.1
    real_overcluster: int = 0
    info_in_steps: bool = False
    diff_augment: tuple[str, ...] = ()
    generator_ema: float = 0.0
    lr_generator: float | None = None
    lr_discriminator: float | None = None
    lr_info: float | None = None
    betas: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise ConfigError(f"model.resolution: must be one of {SUPPORTED_RESOLUTIONS}, got {self.resolution}")
        if self.base_channels < 4 or self.noise_dim < 1:
            raise ConfigError("model.base_channels / model.noise_dim: must be >= 4 / >= 1")
        if any(size < 2 for size in self.categorical) or self.continuous < 0:
            raise ConfigError("model.categorical: sizes must be >= 2; model.continuous: must be >= 0")
        if not self.categorical and not self.continuous:
            raise ConfigError("model.categorical / model.continuous: an InfoGAN needs at least one code")
        for key in ("lambda_categorical", "lambda_continuous", "lambda_noise"):
            if getattr(self, key) < 0:
                raise ConfigError(f"model.{key}: must be >= 0, got {getattr(self, key)}")
        for key in ("lr_generator", "lr_discriminator", "lr_info"):
            if getattr(self, key) == 0:  # bundles and checkpoints written before null said 0 for train.lr
                object.__setattr__(self, key, None)
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"model.{key}: must be > 0 (or null for train.lr), got {getattr(self, key)}")
        for key in ("info_augment", "real_jitter"):
            if not 0 <= getattr(self, key) < 0.5:
                raise ConfigError(f"model.{key}: must be in [0, 0.5), got {getattr(self, key)}")
        if self.real_overcluster and (self.real_overcluster < 2 or not self.real_info):
            raise ConfigError("model.real_overcluster: at least 2 groups, and only with model.real_info")
        if self.real_info < 0 or (self.real_info and (not self.categorical or self.info_in_steps)):
            raise ConfigError("model.real_info: must be >= 0; needs a categorical code and the info player "
                              "(info_in_steps: false)")
        unknown = sorted(set(self.diff_augment) - set(POLICIES))
        if unknown:
            raise ConfigError(f"model.diff_augment: unknown {unknown}; choose from {list(POLICIES)}")
        if not 0 <= self.generator_ema < 1:
            raise ConfigError(f"model.generator_ema: must be in [0, 1), got {self.generator_ema}")
        if self.betas is not None and not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"model.betas: each must be in [0, 1), got {list(self.betas)}")


class InfoCodes(nn.Module):
    """The latent layout and its prior, plus the heads recovering codes and noise from features (N, F)."""

    def __init__(self, config: InfoGANConfig, feature_dim: int) -> None:
        super().__init__()
        self.categorical, self.continuous, self.noise_dim = config.categorical, config.continuous, config.noise_dim
        self.weights = (config.lambda_categorical, config.lambda_continuous, config.lambda_noise)
        self.fixed_std = config.fixed_std
        parts = [LatentPart(f"code{i}", size, "categorical") for i, size in enumerate(self.categorical)]
        if self.continuous:
            parts.append(LatentPart("continuous", self.continuous, "uniform"))
        self.parts = (*parts, LatentPart("noise", self.noise_dim, "gaussian"))
        self.width = sum(part.size for part in self.parts)

        def head(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(feature_dim, HEAD_WIDTH), nn.LeakyReLU(0.2), nn.Linear(HEAD_WIDTH, out))

        self.code_head = head(sum(self.categorical) + 2 * self.continuous)
        self.noise_head = head(self.noise_dim)
        self.overcluster_head = head(config.real_overcluster) if config.real_overcluster else None

    def predict(self, features: torch.Tensor):
        """features (N, F) -> (categorical logits [(N, K)...], continuous mean (N, C), log-std (N, C),
        noise estimate (N, noise_dim))."""
        logits = full_precision(self.code_head(features))
        pieces = logits.split([*self.categorical, self.continuous, self.continuous], 1)
        # A collapsing std would make the NLL explode; a fixed one (std 1: the NLL is half the squared error)
        # keeps the continuous codes from drowning the categorical ones' gradients (see ``fixed_std``).
        log_std = torch.zeros_like(pieces[-1]) if self.fixed_std else pieces[-1].clamp(-5, 2)
        return list(pieces[:-2]), pieces[-2], log_std, self.noise_head(features)

    def estimate(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, F) -> latent estimate (N, width): argmax one-hots (inside the prior, so G decodes
        them as it was trained), continuous means, noise estimate."""
        logits, mean, _, noise = self.predict(features)
        onehots = [F.one_hot(lg.argmax(1), lg.shape[1]).to(mean.dtype) for lg in logits]
        return torch.cat([*onehots, mean, noise], 1)

    def loss(self, features: torch.Tensor, latent: torch.Tensor) -> StepOutput:
        """Info loss of features (N, F) of the images generated from ``latent`` (N, width)."""
        logits, mean, log_std, noise_hat = self.predict(features)
        *onehots, code, noise = latent.split([*self.categorical, self.continuous, self.noise_dim], 1)
        targets = [onehot.argmax(1) for onehot in onehots]
        zero = mean.new_zeros(())
        ce = sum((F.cross_entropy(lg, t) for lg, t in zip(logits, targets)), zero)
        # Gaussian NLL without its constant 0.5 log(2 pi), summed over codes, averaged over images.
        nll = (0.5 * ((code - mean) / log_std.exp()).pow(2) + log_std).sum(1).mean()
        mse = (noise_hat - noise).pow(2).mean()
        w_cat, w_cont, w_noise = self.weights
        loss = w_cat * ce + w_cont * nll + w_noise * mse
        metrics = {"info_loss": loss, "cat_ce": ce, "cont_nll": nll, "noise_mse": mse}
        if targets:
            hits = [(lg.argmax(1) == t).float().mean() for lg, t in zip(logits, targets)]
            metrics["code_acc"] = torch.stack(hits).mean()
        return StepOutput(loss, {k: v.detach() for k, v in metrics.items()})


class CodeGAN(LatentModel):
    """A GAN with InfoGAN codes: the generator, the latent prior, the info step and per-player optimizers.

    Subclasses build the discriminator, define ``features(images) -> (N, F)`` (what the code heads read),
    ``_step_generator``, ``_step_discriminator`` and ``parameters_for``.
    """

    players = ("generator", "discriminator", "info")

    def __init__(self, config: InfoGANConfig, feature_dim: int) -> None:
        super().__init__(config)
        self.codes = InfoCodes(config, feature_dim)
        if config.info_in_steps:  # the info loss rides on the other two players' steps (see InfoGANConfig)
            self.players = ("generator", "discriminator")
        self.latent_parts = self.codes.parts
        self.generator = ConvDecoder(config.resolution, self.codes.width, config.base_channels, config.max_channels)
        self.generator_average = None
        if config.generator_ema:  # no gradients: no optimizer or DDP bucket holds it
            self.generator_average = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("average_steps", torch.zeros((), dtype=torch.long))

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of images (N, 3, H, W): DiffAugment'ed in training (``diff_augment``)."""
        return diff_augment(images, self.config.diff_augment) if self.training else images

    @torch.no_grad()
    def after_step(self, player: str) -> None:
        """After the batch's last player: average the generator's new weights into ``generator_average``."""
        if self.generator_average is None or player != self.players[-1]:
            return
        t = self.average_steps.add_(1).float()
        decay = (t / (t + 9)).clamp(max=self.config.generator_ema)  # min(decay, (1 + t') / (10 + t'))
        for average, current in zip(self.generator_average.parameters(), self.generator.parameters()):
            average.lerp_(current, 1 - decay)

    def features(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch: Batch, player: str = "generator") -> StepOutput:
        if player not in self.players:
            raise ValueError(f"{self.family}: unknown player {player!r} (players: {', '.join(self.players)})")
        return getattr(self, f"_step_{player}")(batch)

    def _prior(self, batch: Batch) -> torch.Tensor:
        """Latents (N, width) for a batch of N real images."""
        return self.prior_codes(batch["image"].shape[0], device=batch["image"].device)

    def _step_info(self, batch: Batch) -> StepOutput:
        latent = self._prior(batch)
        info = self.codes.loss(self.features(jitter(self.generator(latent), self.config.info_augment)), latent)
        if not self.config.real_info:
            return info
        real, amount = batch["image"], self.config.real_jitter
        views = self.features(torch.cat([jitter(real, amount), jitter(real, amount)]))  # (2N, F)
        probs = self.codes.predict(views)[0][0].softmax(1)  # first categorical code, (2N, K)
        mi = paired_assignment_information(*probs.chunk(2))
        metrics = {**info.metrics, "real_mi": mi.detach()}
        if self.codes.overcluster_head is not None:
            over_probs = full_precision(self.codes.overcluster_head(views)).softmax(1)
            over = paired_assignment_information(*over_probs.chunk(2))
            mi, metrics["real_mi_over"] = mi + over, over.detach()
        return StepOutput(info.loss - self.config.real_info * mi, metrics)

    def _modules_parameters(self, *modules: nn.Module) -> Iterator[nn.Parameter]:
        return (p for module in modules for p in module.parameters())

    def optimizer_settings(self, player: str, lr: float, betas: tuple[float, float],
                           weight_decay: float) -> OptimizerSettings:
        c = self.config
        player_lr = {"generator": c.lr_generator, "discriminator": c.lr_discriminator, "info": c.lr_info}[player]
        return OptimizerSettings(lr=lr if player_lr is None else player_lr, betas=c.betas or betas,
                                 weight_decay=weight_decay)

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every player's metrics (no update: BEGAN's k moves only in training), plus, on fully labelled
        batches (digits), the code-vs-label confusion that ``summarize_metrics`` scores."""
        metrics: dict[str, torch.Tensor] = {}
        for player in self.players:
            metrics.update(self(batch, player=player).metrics)
        labels = batch.get("label")
        if self.config.categorical and labels is not None and bool((labels >= 0).all()):
            k = self.config.categorical[0]
            codes = predicted_categories(self, batch["image"])
            for i in range(k):  # every cell, zeros too, so every batch weighs the same in the epoch mean
                for j in range(k):  # labels >= k cannot be matched one-to-one and count as misses
                    metrics[f"confusion/{i}/{j}"] = ((codes == i) & (labels == j)).float().mean()
        return metrics

    def summarize_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Replaces the epoch's confusion fractions by ``label_code_acc``: the categorical code's accuracy
        as a classifier under the best code-to-class assignment (only on labelled data)."""
        cells = {k: v for k, v in means.items() if k.startswith("confusion/")}
        out = {k: v for k, v in means.items() if k not in cells}
        if cells:
            k = self.config.categorical[0]
            confusion = np.array([[cells.get(f"confusion/{i}/{j}", 0.0) for j in range(k)] for i in range(k)])
            out["label_code_acc"] = matched_mass(confusion)  # cells are fractions of all labelled images
        return out

    # LatentModel
    def encode(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """images (N, 3, H, W) -> latent estimate (N, width) in ``latent_parts`` order."""
        return self.codes.estimate(self.features(images))

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, width) -> images (N, 3, H, W), by the averaged generator where there is one."""
        return (self.generator if self.generator_average is None else self.generator_average)(z)
