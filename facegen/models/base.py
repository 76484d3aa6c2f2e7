"""The model interface every family implements, so one training loop, one analysis and one service fit all.

A training step never looks inside a model: for each of ``model.players`` (``("main",)`` for an AE, VAE or
classifier; ``("generator", "discriminator")`` for a GAN) the loop calls ``model(batch, player=...)``, takes
the returned :class:`StepOutput`'s ``loss`` and steps the optimizer over ``model.parameters_for(player)``.

Batches are dicts of tensors with these keys (a model reads the ones it needs):
    image:  (N, 3, H, W) float in [-1, 1]
    attrs:  (N, A) float in {0, 1}, binary attributes in the dataset's attribute order (A may be 0)
    race, age, gender: (N,) int64 FairFace class indices, -1 where the dataset has no such label
    label:  (N,) int64 class of a single-label dataset (digits), -1 elsewhere
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Protocol, runtime_checkable

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


@dataclass
class StepOutput:
    """What one player's step returns.

    loss: scalar tensor the player's optimizer minimises (carries the graph).
    metrics: detached scalar tensors, each a mean over the batch, reported as ``<split>/<name>``.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW settings for one player."""

    lr: float
    betas: tuple[float, float]
    weight_decay: float


class FaceModel(nn.Module):
    """Base class of every family.

    Subclasses set ``family`` (the registry name), ``config_class`` (a frozen dataclass whose fields are the
    family's ``model:`` config keys) and, for several optimizers, ``players``; they implement ``forward``.
    """

    family: ClassVar[str]
    config_class: ClassVar[type]
    players: ClassVar[tuple[str, ...]] = ("main",)
    # True for a latent model without a usable prior (the AE): new faces come from a sampler fitted on
    # encoded data (facegen.latent.sampler) rather than from ``sample``.
    needs_fitted_sampler: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def forward(self, batch: Batch, player: str = "main") -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def parameters_for(self, player: str) -> Iterator[nn.Parameter]:
        """Parameters the ``player``'s optimizer updates; single-player models train everything."""
        return self.parameters()

    def optimizer_settings(self, player: str, lr: float, betas: tuple[float, float],
                           weight_decay: float) -> OptimizerSettings:
        """Per-player optimizer settings; the defaults come from ``train.*``, GANs may override per player."""
        return OptimizerSettings(lr=lr, betas=betas, weight_decay=weight_decay)

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Validation metrics on one batch (no optimisation); by default the first player's metrics."""
        return self(batch, player=self.players[0]).metrics

    def summarize_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Derive epoch-level metrics from the all-reduced means of ``validation_step``'s metrics.

        Ratios such as precision are not means of per-batch values: a model reports per-batch rates
        (e.g. true-positive fraction) and combines the global rates here. Default: unchanged.
        """
        return means

    def set_epoch(self, epoch: int) -> None:
        """Called by the loop before each epoch, for schedules that depend on it (e.g. KL warm-up)."""


@dataclass(frozen=True)
class LatentPart:
    """One named slice of a latent vector.

    kind: ``"gaussian"`` (continuous, N(0, 1) prior), ``"uniform"`` (continuous code in [-1, 1]),
        ``"categorical"`` (one-hot of ``size`` classes) or ``"condition"`` (given, not sampled).
    """

    name: str
    size: int
    kind: str


@runtime_checkable
class LatentModel(Protocol):
    """What analysis, editing and serving need from a generative family.

    latent_parts: the latent vector's slices, in order; their sizes add up to the latent width D.
    """

    latent_parts: tuple[LatentPart, ...]

    def encode(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """images (N, 3, H, W) in [-1, 1] -> z (N, D), the deterministic code (posterior mean for a VAE)."""

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, D) -> images (N, 3, H, W) in [-1, 1]."""

    def sample(self, n: int, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n new images (n, 3, H, W) in [-1, 1] drawn from the model's prior."""
