"""CelebA multi-label attribute classifier: one trunk (see ``backbones.py``), one logit per chosen attribute.

The loss is binary cross-entropy with logits over the *chosen* attributes only (``attributes``): a dataset
that labels some attributes and leaves the rest all-0 (the synthetic faces render 21 of 40) would otherwise
teach the network that those are always absent, and report near-perfect accuracy on them.

Validation reports, per attribute, the fractions of the batch that are true/false positives/negatives
(``tp/Smiling`` ...); ``summarize_metrics`` turns the epoch's global fractions into accuracy, precision,
recall, F1 and balanced accuracy per attribute (``acc/Smiling``, ``f1/Smiling``, ...) and their means over
attributes (``mean_accuracy``, ``mean_f1``, ...). Ratios with a zero denominator count as 0, like
scikit-learn's ``zero_division=0``; balanced accuracy averages the rates of the classes present, like
``sklearn.metrics.balanced_accuracy_score``. A logit > 0 (probability > 0.5) predicts "present".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.errors import ConfigError
from facegen.models.backbones import BackboneConfig, TrunkClassifier, build_backbone
from facegen.models.base import Batch, StepOutput
from facegen.models.blocks import SUPPORTED_RESOLUTIONS

LOSSES = ("bce", "balanced")
_COUNTS = ("tp", "fp", "fn", "tn")


@dataclass(frozen=True)
class ClassifierConfig:
    """The ``model:`` section of an attribute classifier config.

    resolution: image side (32, 64 or 128); must match the shards.
    backbone: the trunk (``model.backbone.name``, ``.weights``, ``.trainable_layers`` ...), see BackboneConfig.
    dropout: dropout on the trunk's features before the linear head.
    attributes: CelebA attribute names to train and evaluate, in any order; empty = all 40.
    loss: ``bce`` (mean over images and attributes) or ``balanced`` (per attribute, the mean BCE of the
        batch's positives and that of its negatives are averaged, so a rare attribute's few positives weigh
        as much as its many negatives: the loss counterpart of balanced accuracy).
    pos_weight: ``bce`` only: weight of the positive term, one per chosen attribute (in ``attributes``
        order) or a single value for all; empty = 1. ``(1 - p) / p`` for positive rate p balances an attribute.
    """

    resolution: int = 64
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    dropout: float = 0.0
    attributes: tuple[str, ...] = ()
    loss: str = "bce"
    pos_weight: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise ConfigError(f"model.resolution: must be one of {SUPPORTED_RESOLUTIONS}, got {self.resolution}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        unknown = [a for a in self.attributes if a not in CELEBA_ATTRIBUTES]
        if unknown:
            raise ConfigError(f"model.attributes: unknown CelebA attribute {unknown[0]!r}")
        if len(set(self.attributes)) != len(self.attributes):
            raise ConfigError("model.attributes: lists an attribute twice")
        if self.loss not in LOSSES:
            raise ConfigError(f"model.loss: must be one of {LOSSES}, got {self.loss!r}")
        n = len(self.attributes) or len(CELEBA_ATTRIBUTES)
        if self.pos_weight and (self.loss != "bce" or len(self.pos_weight) not in (1, n)):
            raise ConfigError(f"model.pos_weight: needs loss bce and 1 or {n} values (one per attribute), "
                              f"got {len(self.pos_weight)} with loss {self.loss}")
        if any(w <= 0 for w in self.pos_weight):
            raise ConfigError("model.pos_weight: weights must be positive")


def binary_scores(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and balanced accuracy from confusion counts or rates of one attribute."""
    total = tp + fp + fn + tn
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    # Balanced accuracy: mean of the true-positive and true-negative rates of the classes that occur.
    present = ([recall] if tp + fn > 0 else []) + ([tn / (tn + fp)] if tn + fp > 0 else [])
    return {
        "acc": (tp + tn) / total if total > 0 else 0.0,
        "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "recall": recall,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0,
        "balanced_acc": sum(present) / len(present) if present else 0.0,
    }


class AttributeClassifier(TrunkClassifier):
    """images (N, 3, R, R) -> logits (N, A) over the chosen attributes, trained with (balanced) BCE."""

    family = "classifier"
    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        self._names = config.attributes or CELEBA_ATTRIBUTES
        self.trunk, features = build_backbone(config.backbone, config.resolution)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(features, len(self._names))
        # Non-persistent buffers: they follow .to(device) but are config, not weights.
        index = [CELEBA_ATTRIBUTES.index(a) for a in self._names]
        self.register_buffer("attr_index", torch.tensor(index), persistent=False)
        weight = torch.tensor(config.pos_weight or (1.0,)).expand(len(self._names)).clone()
        self.register_buffer("pos_weight", weight, persistent=False)


    @property
    def attribute_names(self) -> tuple[str, ...]:
        """The chosen attributes, in the order of the logits' and ``predict_proba``'s columns."""
        return tuple(self._names)

    def parameters_for(self, player: str) -> Iterator[nn.Parameter]:
        """Only the parameters that train: frozen trunk blocks stay out of the optimizer (and weight decay)."""
        return (p for p in self.parameters() if p.requires_grad)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, R, R) in [-1, 1] -> logits (N, A)."""
        return self.head(self.dropout(self.trunk(images)))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, R, R) in [-1, 1] -> P(attribute present) (N, A), columns in ``attribute_names`` order.

        Uses the module's current mode: call ``.eval()`` first for deterministic dropout and BatchNorm.
        """
        return torch.sigmoid(self.logits(images))

    def targets(self, batch: Batch) -> torch.Tensor:
        """The chosen columns of ``batch["attrs"]`` (N, 40) -> (N, A) float 0/1."""
        attrs = batch["attrs"]
        if attrs.shape[1] != len(CELEBA_ATTRIBUTES):
            raise ConfigError(f"data.shards: batches carry {attrs.shape[1]} attributes, the classifier needs the "
                              f"{len(CELEBA_ATTRIBUTES)} CelebA ones (is this a CelebA-layout dataset?)")
        return attrs.index_select(1, self.attr_index).float()

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits, target (N, A) -> scalar loss (see ``ClassifierConfig.loss``)."""
        if self.config.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # (N, A)
        positives, negatives = target.sum(0), (1 - target).sum(0)  # (A,)
        pos_term = (bce * target).sum(0) / positives.clamp(min=1)
        neg_term = (bce * (1 - target)).sum(0) / negatives.clamp(min=1)
        # An attribute with no positives (or negatives) in this batch averages over the one class it has.
        has_pos, has_neg = (positives > 0).float(), (negatives > 0).float()
        return ((pos_term * has_pos + neg_term * has_neg) / (has_pos + has_neg)).mean()

    def forward(self, batch: Batch, player: str = "main") -> StepOutput:
        logits = self.logits(batch["image"])
        target = self.targets(batch)
        loss = self.loss(logits, target)
        accuracy = ((logits > 0) == (target > 0.5)).float().mean()
        return StepOutput(loss, {"loss": loss.detach(), "mean_accuracy": accuracy.detach()})

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """loss plus, per attribute, the batch fractions ``tp/<name>``, ``fp/``, ``fn/``, ``tn/``."""
        logits = self.logits(batch["image"])
        target = self.targets(batch)
        predicted, actual = logits > 0, target > 0.5
        rates = {"tp": predicted & actual, "fp": predicted & ~actual, "fn": ~predicted & actual,
                 "tn": ~predicted & ~actual}
        metrics = {"loss": self.loss(logits, target)}
        for kind, hits in rates.items():
            fractions = hits.float().mean(0)  # (A,)
            metrics.update({f"{kind}/{name}": fractions[i] for i, name in enumerate(self._names)})
        return metrics

    def summarize_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Global tp/fp/fn/tn rates -> per-attribute ``acc/``, ``precision/``, ``recall/``, ``f1/``,
        ``balanced_acc/`` and their means ``mean_accuracy``, ``mean_precision``, ``mean_recall``, ``mean_f1``,
        ``mean_balanced_accuracy``; the raw rates are left out, other metrics (``loss``) pass through."""
        out = {k: v for k, v in means.items() if k.split("/")[0] not in _COUNTS}
        totals: dict[str, float] = {}
        for name in self._names:
            scores = binary_scores(*(means[f"{kind}/{name}"] for kind in _COUNTS))
            for metric, value in scores.items():
                out[f"{metric}/{name}"] = value
                totals[metric] = totals.get(metric, 0.0) + value
        mean_names = {"acc": "mean_accuracy", "balanced_acc": "mean_balanced_accuracy"}
        out.update({mean_names.get(m, f"mean_{m}"): total / len(self._names) for m, total in totals.items()})
        return out
