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
from typing import Any, ClassVar, Iterator, Sequence

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
        # Players with a network of their own (a z adversary, a patch critic): name -> that submodule, which
        # its player alone steps (with the network's ``optimizer_settings(lr)`` when it has one); the first
        # player steps every other trainable parameter. A plain dict: the submodules are registered as usual.
        self.player_networks: dict[str, nn.Module] = {}

    def forward(self, batch: Batch, player: str = "main") -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def parameters_for(self, player: str) -> Iterator[nn.Parameter]:
        """Parameters the ``player``'s optimizer updates: a player's own network (``player_networks``), else
        every trainable parameter outside those networks (all of them for a single-player model)."""
        if player in self.player_networks:
            return self.player_networks[player].parameters()
        skip = {id(p) for network in self.player_networks.values() for p in network.parameters()}
        return (p for p in self.parameters() if p.requires_grad and id(p) not in skip)

    def optimizer_settings(self, player: str, lr: float, betas: tuple[float, float],
                           weight_decay: float) -> OptimizerSettings:
        """Per-player optimizer settings; the defaults come from ``train.*``, a player's own network may set
        its own, GANs may override per player."""
        network = self.player_networks.get(player)
        if hasattr(network, "optimizer_settings"):
            return network.optimizer_settings(lr)
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

    def after_step(self, player: str) -> None:
        """Called by the loop after ``player``'s optimizer step, for state that follows the weights (a GAN
        generator's running average)."""

    # Pretrained pieces: files a config names are read by ``facegen.pretrained``, never by ``__init__``.
    @classmethod
    def resolve_config(cls, config: Any, loader: Any) -> Any:
        """``config`` completed from the files it names (``loader``: a ``facegen.pretrained.Loader``)."""
        return config

    @classmethod
    def export_config(cls, config: Any) -> Any:
        """What a bundle records instead of a resolved ``config`` (file paths whose contents are now weights
        cleared), so a bundle loads without them."""
        return config

    def load_pretrained(self, loader: Any) -> None:
        """Load what the config names on disk (weights files, a perceptual loss's feature net) through
        ``loader``; called by the code that builds a model for training, after ``__init__``."""

    def feature_trunk(self) -> nn.Module | None:
        """The convolutional trunk whose features other models may reuse (classifiers), else None."""
        return None


@dataclass(frozen=True)
class LatentPart:
    """One named slice of a latent vector.

    kind: ``"gaussian"`` (continuous, N(0, 1) prior), ``"uniform"`` (continuous code in [-1, 1]),
        ``"categorical"`` (one-hot of ``size`` classes) or ``"condition"`` (given, not sampled).
    """

    name: str
    size: int
    kind: str


class LatentModel(FaceModel):
    """What analysis, editing, augmentation and serving need from a generative family.

    Callers ask a model what it can do through these methods and ``latent_parts``; they never test its family
    name. ``latent_parts`` are the latent vector's named slices, in order; their sizes add up to the latent
    width D (:meth:`latent_width`).
    """

    latent_parts: tuple[LatentPart, ...]

    def encode(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """images (N, 3, H, W) in [-1, 1] -> z (N, D), the deterministic code (posterior mean for a VAE)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """z (N, D) -> images (N, 3, H, W) in [-1, 1]."""
        raise NotImplementedError

    def sample(self, n: int, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n new images (n, 3, H, W) in [-1, 1] decoded from :meth:`prior_codes`."""
        return self.decode(self.prior_codes(n, generator).to(self.device()), cond)

    def device(self) -> torch.device:
        """Where the model's tensors live (the CPU for a model that has none)."""
        return next(iter([*self.parameters(), *self.buffers()]), torch.zeros(0)).device

    def latent_width(self) -> int:
        return sum(part.size for part in self.latent_parts)

    def part_indices(self, kinds: Sequence[str]) -> list[int]:
        """Latent entries (indices into D) belonging to parts of the given kinds."""
        out, start = [], 0
        for part in self.latent_parts:
            if part.kind in kinds:
                out += list(range(start, start + part.size))
            start += part.size
        return out

    def prior_codes(self, n: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
        """(n, D) codes drawn from the prior on ``device`` (the generator's, if one is given), part by part:
        N(0, I) for ``gaussian``, U(-1, 1) for ``uniform``, a uniformly drawn one-hot for ``categorical``; a
        ``condition`` is all-zero (none given). Drawn where they are used: a copy from host memory each step
        would make the host wait for the GPU. A model without a usable prior (``needs_fitted_sampler``) still
        answers, but its draws are crude."""
        parts = []
        for part in self.latent_parts:
            if part.kind == "gaussian":
                parts.append(torch.randn(n, part.size, generator=generator, device=device))
            elif part.kind == "uniform":
                parts.append(torch.rand(n, part.size, generator=generator, device=device) * 2 - 1)
            elif part.kind == "categorical":
                index = torch.randint(part.size, (n,), generator=generator, device=device)
                parts.append(torch.nn.functional.one_hot(index, part.size).float())
            else:
                parts.append(torch.zeros(n, part.size, device=device))
        return torch.cat(parts, dim=1)

    def condition_of(self, batch: Batch) -> torch.Tensor | None:
        """The condition (N, C) the encoder needs for ``batch`` (a conditional model), else None."""
        return None

    def condition_attributes(self) -> tuple[str, ...]:
        """Names of the condition's entries when they are binary attributes read from ``batch["attrs"]``;
        empty for an unconditional model or a class condition."""
        return ()

    def condition_part(self) -> LatentPart | None:
        """The ``condition`` slice of the latent vector, if the model has one."""
        return next((part for part in self.latent_parts if part.kind == "condition"), None)

    def code_parts(self) -> tuple[LatentPart, ...]:
        """The interpretable code slices a GAN keeps recoverable (``uniform`` and ``categorical``)."""
        return tuple(part for part in self.latent_parts if part.kind in ("uniform", "categorical"))

    def entry_names(self, part: LatentPart) -> tuple[str, ...]:
        """Names of a part's entries, when each entry is a settable attribute (a CVAE's attribute condition)."""
        return self.condition_attributes() if part.kind == "condition" else ()

    def conditions(self) -> torch.Tensor:
        """The conditions a report shows side by side, (K, C); (0, 0) for an unconditional model."""
        return torch.zeros(0, 0)

    def conditions_caption(self) -> str:
        """What :meth:`conditions`' columns are, for a figure caption."""
        return "none, then each attribute alone" if self.condition_attributes() else "each class"

    @torch.no_grad()
    def decode_all_conditions(self, z: torch.Tensor, conditions: torch.Tensor | None = None) -> torch.Tensor:
        """The same z (N, D) under each of ``conditions`` (K, C) (default :meth:`conditions`): images
        (N, K, 3, H, W); row i is one identity across every condition. Conditional models only."""
        if self.condition_part() is None:
            raise ValueError(f"{self.family}: an unconditional model has no conditions to decode under")
        conditions = self.conditions() if conditions is None else conditions.to(z.device)
        n, k = z.shape[0], conditions.shape[0]
        images = self.decode(z.repeat_interleave(k, dim=0), conditions.repeat(n, 1))
        return images.view(n, k, *images.shape[1:])
