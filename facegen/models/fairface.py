"""FairFace multi-head classifier: one trunk (see ``backbones.py``), three softmax heads race / age / gender.

Each head's loss is cross-entropy over the rows that carry its label (``-1`` = missing, ignored), divided by
that count, and the total is their weighted sum; a batch where a head has no labels adds 0 for it.

Validation reports each head's confusion matrix as cell rates, ``cm/<head>/<true>/<predicted>`` = fraction
of the batch whose true class is ``true`` and predicted class ``predicted`` (class indices in
``FAIRFACE_LABELS`` order); unlabelled rows fall in no cell, so a head's cells sum to its labelled fraction.
The epoch means of those rates are the global matrix up to scale, from which ``summarize_metrics`` derives
``acc/<head>``, ``balanced_acc/<head>`` and per class ``precision/<head>/<class>`` and ``recall/...``
(class names with spaces as underscores, e.g. ``recall/race/East_Asian``). The cells stay in the summary so
``confusion_matrices`` (and ``facegen.reporting.confusion``) can rebuild the matrices from reported metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegen.attributes import FAIRFACE_LABELS
from facegen.errors import ConfigError
from facegen.models.backbones import BackboneConfig, TrunkClassifier, build_backbone
from facegen.models.base import Batch, StepOutput
from facegen.models.blocks import SUPPORTED_RESOLUTIONS

HEADS: tuple[str, ...] = tuple(FAIRFACE_LABELS)  # race, age, gender


@dataclass(frozen=True)
class FairFaceConfig:
    """The ``model:`` section of a FairFace classifier config.

    resolution: image side (32, 64 or 128); must match the shards.
    backbone: the shared trunk (``model.backbone.name``, ``.weights``, ``.trainable_layers`` ...).
    dropout: dropout on the trunk's features before the heads.
    race_weight, age_weight, gender_weight: each head's weight in the total loss (0 = head not trained,
        still evaluated).
    """

    resolution: int = 64
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    dropout: float = 0.0
    race_weight: float = 1.0
    age_weight: float = 1.0
    gender_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise ConfigError(f"model.resolution: must be one of {SUPPORTED_RESOLUTIONS}, got {self.resolution}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        weights = {head: getattr(self, f"{head}_weight") for head in HEADS}
        if min(weights.values()) < 0 or sum(weights.values()) == 0:
            raise ConfigError("model.race_weight / age_weight / gender_weight: must be >= 0, not all 0")


def class_key(name: str) -> str:
    """A class name as a metric-name part: ``"East Asian"`` -> ``"East_Asian"``."""
    return name.replace(" ", "_")


def confusion_matrices(metrics: dict[str, float], prefix: str = "") -> dict[str, np.ndarray]:
    """The ``<prefix>cm/<head>/<i>/<j>`` rates of ``metrics`` as one (C, C) float64 array per head present.

    Rows are true classes, columns predicted ones, in ``FAIRFACE_LABELS`` order; prefix ``"val/"`` reads a
    reported history entry.
    """
    out = {}
    for head in HEADS:
        n = len(FAIRFACE_LABELS[head])
        keys = [[f"{prefix}cm/{head}/{i}/{j}" for j in range(n)] for i in range(n)]
        if keys[0][0] in metrics:
            out[head] = np.array([[metrics[k] for k in row] for row in keys], dtype=np.float64)
    return out


def matrix_scores(head: str, matrix: np.ndarray) -> dict[str, float]:
    """One head's (C, C) confusion matrix (counts or rates) -> its flat metrics (see the module docstring)."""
    labelled, predicted, correct = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    total = matrix.sum()
    out = {f"acc/{head}": float(correct.sum() / total) if total > 0 else 0.0}
    recalls = []
    for i, name in enumerate(FAIRFACE_LABELS[head]):
        recall = float(correct[i] / labelled[i]) if labelled[i] > 0 else 0.0
        out[f"precision/{head}/{class_key(name)}"] = float(correct[i] / predicted[i]) if predicted[i] > 0 else 0.0
        out[f"recall/{head}/{class_key(name)}"] = recall
        if labelled[i] > 0:
            recalls.append(recall)
    # Mean recall over the classes that occur: sklearn's balanced_accuracy_score.
    out[f"balanced_acc/{head}"] = float(np.mean(recalls)) if recalls else 0.0
    return out


class FairFaceClassifier(TrunkClassifier):
    """images (N, 3, R, R) -> {head: logits (N, C_head)} for race (7), age (9) and gender (2)."""

    family = "fairface"
    config_class = FairFaceConfig

    def __init__(self, config: FairFaceConfig) -> None:
        super().__init__(config)
        self.trunk, features = build_backbone(config.backbone, config.resolution)
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict({head: nn.Linear(features, len(FAIRFACE_LABELS[head])) for head in HEADS})
        self.head_weights = {head: getattr(config, f"{head}_weight") for head in HEADS}


    def parameters_for(self, player: str) -> Iterator[nn.Parameter]:
        """Only the parameters that train: frozen trunk blocks stay out of the optimizer (and weight decay)."""
        return (p for p in self.parameters() if p.requires_grad)

    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (N, 3, R, R) in [-1, 1] -> {head: logits (N, C_head)}."""
        features = self.dropout(self.trunk(images))
        return {head: layer(features) for head, layer in self.heads.items()}

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (N, 3, R, R) in [-1, 1] -> {head: class probabilities (N, C_head)}; call ``.eval()`` first."""
        return {head: logits.softmax(1) for head, logits in self.logits(images).items()}

    def _losses(self, logits: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total loss and each head's mean cross-entropy over its labelled rows."""
        per_head = {}
        for head, head_logits in logits.items():
            labels = batch[head]
            summed = F.cross_entropy(head_logits, labels, ignore_index=-1, reduction="sum")
            per_head[head] = summed / (labels >= 0).sum().clamp(min=1)  # 0, not NaN, when none is labelled
        total = sum(self.head_weights[head] * loss for head, loss in per_head.items())
        return total, per_head

    def forward(self, batch: Batch, player: str = "main") -> StepOutput:
        """Loss and metrics ``loss``, ``loss/<head>``, ``acc/<head>`` (accuracy over the labelled rows)."""
        logits = self.logits(batch["image"])
        loss, per_head = self._losses(logits, batch)
        metrics = {"loss": loss.detach()}
        for head, head_logits in logits.items():
            labels = batch[head]
            correct = ((head_logits.argmax(1) == labels) & (labels >= 0)).sum()
            metrics[f"loss/{head}"] = per_head[head].detach()
            metrics[f"acc/{head}"] = (correct / (labels >= 0).sum().clamp(min=1)).float()
        return StepOutput(loss, metrics)

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Losses plus every head's confusion-matrix cell rates ``cm/<head>/<true>/<predicted>``."""
        logits = self.logits(batch["image"])
        loss, per_head = self._losses(logits, batch)
        metrics = {"loss": loss, **{f"loss/{head}": value for head, value in per_head.items()}}
        n = batch["image"].shape[0]
        for head, head_logits in logits.items():
            classes = head_logits.shape[1]
            labels = batch[head]
            keep = labels >= 0
            cells = labels[keep] * classes + head_logits.argmax(1)[keep]
            rates = torch.bincount(cells, minlength=classes * classes).float() / n  # (C * C,)
            metrics.update({f"cm/{head}/{i // classes}/{i % classes}": rates[i] for i in range(classes * classes)})
        return metrics

    def summarize_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Adds per-head ``acc/``, ``balanced_acc/``, per-class ``precision/`` and ``recall/`` computed from the
        global confusion matrices, plus ``mean_accuracy`` and ``mean_balanced_accuracy`` over the heads."""
        out = dict(means)
        matrices = confusion_matrices(means)
        for head, matrix in matrices.items():
            out.update(matrix_scores(head, matrix))
        if matrices:
            out["mean_accuracy"] = float(np.mean([out[f"acc/{head}"] for head in matrices]))
            out["mean_balanced_accuracy"] = float(np.mean([out[f"balanced_acc/{head}"] for head in matrices]))
        return out
