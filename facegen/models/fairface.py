"""FairFace multi-head classifier: one trunk (see ``backbones.py``), three heads race / age / gender.

Each head's loss is cross-entropy over the rows that carry its label (``-1`` = missing, ignored), divided by
that count, and the total is their weighted sum; a batch where a head has no labels adds 0 for it.

``age_loss: ordinal`` makes age an ordinal head instead: CORN (Shi, Cao & Raschka 2023, "Deep neural networks
for rank-consistent ordinal regression based on conditional probabilities"). A linear layer gives K-1 logits
``g_k`` of the conditional probabilities P(age > k | age > k-1); task k is trained with binary cross-entropy
against ``[y > k]`` on the rows with ``y >= k`` only, and the age loss is the sum over tasks and rows divided
by the labelled rows (as for CE, but on a larger scale: up to K-1 terms a row). The cumulative probabilities
``P(age > k) = prod_{j <= k} sigmoid(g_j)`` never increase with k (rank-consistent by construction). The
synthetic faces age by cues that switch on at one bin and stay (smaller head and larger eyes up to 10-19,
wrinkles from 30-39, one more forehead line a decade to 60-69, grey hair ever likelier), so each threshold is
a question the image answers, but with its own cue. CORAL (one weight vector and K-1 biases: one scalar score)
did far worse in a 20-epoch trial on those faces (36% exact test accuracy, 60% with its biases scaled up 8x so
Adam could spread them, against 76% for CORN and 72% for CE): one score has to rank all cues on one scale.
``logits`` returns the (N, K-1) conditional logits; ``predict_proba`` turns them into class probabilities
``P(y = k) = P(> k-1) - P(> k)`` (clamped at 0, renormalised) and every prediction (metrics, confusion
matrices, serving) is their argmax, so ``argmax(predict_proba)`` is what validation scored.

Validation reports each head's confusion matrix as cell rates, ``cm/<head>/<true>/<predicted>`` = fraction
of the batch whose true class is ``true`` and predicted class ``predicted`` (class indices in
``FAIRFACE_LABELS`` order); unlabelled rows fall in no cell, so a head's cells sum to its labelled fraction.
The epoch means of those rates are the global matrix up to scale, from which ``summarize_metrics`` derives
``acc/<head>``, ``balanced_acc/<head>`` and per class ``precision/<head>/<class>`` and ``recall/...``
(class names with spaces as underscores, e.g. ``recall/race/East_Asian``), and ``acc_within1/age``, the share
of labelled rows whose predicted age bin is within one of the true one. The cells stay in the summary so
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
AGE_LOSSES: tuple[str, ...] = ("ce", "ordinal")


@dataclass(frozen=True)
class FairFaceConfig:
    """The ``model:`` section of a FairFace classifier config.

    resolution: image side (32, 64 or 128); must match the shards.
    backbone: the shared trunk (``model.backbone.name``, ``.weights``, ``.trainable_layers`` ...).
    dropout: dropout on the trunk's features before the heads.
    race_weight, age_weight, gender_weight: each head's weight in the total loss (0 = head not trained,
        still evaluated).
    age_loss: ``ce`` (default: a 9-way softmax head, cross-entropy) or ``ordinal`` (CORN ordinal head, see the
        module docstring; its weights are ``heads.age.linear.weight`` and ``.bias``, so a bundle loads only
        with the ``age_loss`` it was trained with, which its saved config records).
    """

    resolution: int = 64
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    dropout: float = 0.0
    race_weight: float = 1.0
    age_weight: float = 1.0
    gender_weight: float = 1.0
    age_loss: str = "ce"

    def __post_init__(self) -> None:
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise ConfigError(f"model.resolution: must be one of {SUPPORTED_RESOLUTIONS}, got {self.resolution}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        weights = {head: getattr(self, f"{head}_weight") for head in HEADS}
        if min(weights.values()) < 0 or sum(weights.values()) == 0:
            raise ConfigError("model.race_weight / age_weight / gender_weight: must be >= 0, not all 0")
        if self.age_loss not in AGE_LOSSES:
            raise ConfigError(f"model.age_loss: must be one of {AGE_LOSSES}, got {self.age_loss!r}")


def class_key(name: str) -> str:
    """A class name as a metric-name part: ``"East Asian"`` -> ``"East_Asian"``."""
    return name.replace(" ", "_")


class OrdinalHead(nn.Module):
    """features (N, F) -> K-1 CORN logits (N, K-1) of P(y > k | y > k-1), k = 0 .. K-2, one linear layer."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes - 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def ordinal_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CORN loss summed over rows and tasks: for each labelled row (``labels >= 0``) and each task k with
    ``label >= k``, the BCE of logit k against ``[label > k]``. (N, K-1), (N,) -> scalar."""
    levels = torch.arange(logits.shape[1], device=logits.device)
    used = (labels.unsqueeze(1) >= levels) & (labels.unsqueeze(1) >= 0)  # -1 rows take part in no task
    targets = (labels.unsqueeze(1) > levels).to(logits.dtype)
    terms = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (terms * used).sum()


def cumulative_proba(logits: torch.Tensor) -> torch.Tensor:
    """(N, K-1) CORN logits -> (N, K-1) cumulative probabilities P(y > k) = prod_{j <= k} sigmoid(logit_j)."""
    return torch.sigmoid(logits).cumprod(1)


def ordinal_proba(logits: torch.Tensor) -> torch.Tensor:
    """(N, K-1) CORN logits -> (N, K) class probabilities P(y = k) = P(> k-1) - P(> k), with P(> -1) = 1 and
    P(> K-1) = 0; a negative difference (impossible from the product, kept as a guard) is clamped to 0 and each
    row renormalised to sum to 1."""
    above = cumulative_proba(logits)
    ones, zeros = torch.ones_like(above[:, :1]), torch.zeros_like(above[:, :1])
    cumulative = torch.cat([ones, above, zeros], 1)
    proba = (cumulative[:, :-1] - cumulative[:, 1:]).clamp(min=0)
    return proba / proba.sum(1, keepdim=True).clamp(min=torch.finfo(proba.dtype).tiny)


def ordinal_rank(logits: torch.Tensor) -> torch.Tensor:
    """CORN's own decoding: the number of P(y > k) above 0.5, (N, K-1) -> (N,) int64 (the median class; it can
    differ from the argmax of ``ordinal_proba``, the mode, which the model predicts)."""
    return (cumulative_proba(logits) > 0.5).sum(1)


def within_one_accuracy(matrix: np.ndarray) -> float:
    """Share of a (C, C) confusion matrix (counts or rates, rows true) with |true - predicted| <= 1."""
    total = matrix.sum()
    rows, cols = np.indices(matrix.shape)
    return float(matrix[np.abs(rows - cols) <= 1].sum() / total) if total > 0 else 0.0


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
        # The ordinal head replaces the plain one after all are built: race and gender start from the same
        # weights under either age_loss (what bench/fairface_age.py compares).
        self.ordinal = {head for head in HEADS if head == "age" and config.age_loss == "ordinal"}
        for head in self.ordinal:
            self.heads[head] = OrdinalHead(features, len(FAIRFACE_LABELS[head]))
        self.head_weights = {head: getattr(config, f"{head}_weight") for head in HEADS}

    def parameters_for(self, player: str) -> Iterator[nn.Parameter]:
        """Only the parameters that train: frozen trunk blocks stay out of the optimizer (and weight decay)."""
        return (p for p in self.parameters() if p.requires_grad)

    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (N, 3, R, R) in [-1, 1] -> {head: logits (N, C_head)}; an ordinal head's are its (N, C_head - 1)
        CORN logits (``class_proba`` turns either kind into class probabilities)."""
        features = self.dropout(self.trunk(images))
        return {head: layer(features) for head, layer in self.heads.items()}

    def class_proba(self, head: str, logits: torch.Tensor) -> torch.Tensor:
        """One head's ``logits`` -> its class probabilities (N, C_head)."""
        return ordinal_proba(logits) if head in self.ordinal else logits.softmax(1)

    def predict_classes(self, head: str, logits: torch.Tensor) -> torch.Tensor:
        """One head's ``logits`` -> predicted classes (N,): the argmax of ``class_proba``."""
        return self.class_proba(head, logits).argmax(1) if head in self.ordinal else logits.argmax(1)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (N, 3, R, R) in [-1, 1] -> {head: class probabilities (N, C_head)}; call ``.eval()`` first."""
        return {head: self.class_proba(head, logits) for head, logits in self.logits(images).items()}

    def _losses(self, logits: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total loss and each head's mean loss (cross-entropy, or the ordinal loss) over its labelled rows."""
        per_head = {}
        for head, head_logits in logits.items():
            labels = batch[head]
            if head in self.ordinal:
                summed = ordinal_loss(head_logits, labels)
            else:
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
            correct = ((self.predict_classes(head, head_logits) == labels) & (labels >= 0)).sum()
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
            classes = len(FAIRFACE_LABELS[head])
            labels = batch[head]
            keep = labels >= 0
            cells = labels[keep] * classes + self.predict_classes(head, head_logits)[keep]
            rates = torch.bincount(cells, minlength=classes * classes).float() / n  # (C * C,)
            metrics.update({f"cm/{head}/{i // classes}/{i % classes}": rates[i] for i in range(classes * classes)})
        return metrics

    def summarize_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Adds per-head ``acc/``, ``balanced_acc/``, per-class ``precision/`` and ``recall/`` computed from the
        global confusion matrices, ``acc_within1/age`` (age bin off by at most one), plus ``mean_accuracy`` and
        ``mean_balanced_accuracy`` over the heads."""
        out = dict(means)
        matrices = confusion_matrices(means)
        for head, matrix in matrices.items():
            out.update(matrix_scores(head, matrix))
        if "age" in matrices:
            out["acc_within1/age"] = within_one_accuracy(matrices["age"])
        if matrices:
            out["mean_accuracy"] = float(np.mean([out[f"acc/{head}"] for head in matrices]))
            out["mean_balanced_accuracy"] = float(np.mean([out[f"balanced_acc/{head}"] for head in matrices]))
        return out
