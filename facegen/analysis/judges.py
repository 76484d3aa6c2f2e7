"""Judges of edited faces: what decides whether an edit changed an attribute.

An edited image has no ground truth: the synthetic generator never rendered those pixels, so the only
practical judge is a model that reads images. Two are used, both :class:`~facegen.latent.scoring.AttributeScorer`:

* the trained attribute classifier (``--classifier``), wrapped in :class:`ResizedScorer` when its resolution
  differs from the generative model's;
* a :class:`PixelProbe`: per attribute an L2 logistic regression on average-pooled pixels, fitted on the
  ground-truth labels of *real* training images, class-balanced so 0.5 is its decision point. It is weak
  (linear, low resolution) but independent of the classifier and of the latent model, and it needs nothing
  but labelled data; its held-out balanced accuracy on reconstructions says how far to trust it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from facegen.latent.scoring import AttributeScorer, batched


class ResizedScorer:
    """``scorer`` fed images resized (bilinear, antialiased) to ``resolution`` x ``resolution``."""

    def __init__(self, scorer: AttributeScorer, resolution: int) -> None:
        self.scorer, self.resolution = scorer, resolution

    @property
    def attribute_names(self) -> Sequence[str]:
        return self.scorer.attribute_names

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.resolution:
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear",
                                   antialias=True, align_corners=False)
        return self.scorer.predict_proba(images)


class SubsetScorer:
    """``scorer`` reduced to the columns of ``names`` it knows (in its order): a classifier trained on all 40
    CelebA attributes says nothing useful about the ones the data never varies."""

    def __init__(self, scorer: AttributeScorer, names: Sequence[str]) -> None:
        known = list(scorer.attribute_names)
        self.scorer = scorer
        self.names = tuple(n for n in known if n in set(names))
        self.columns = [known.index(n) for n in self.names]

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return self.names

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return self.scorer.predict_proba(images)[:, self.columns]


class PixelProbe:
    """P(attribute) = sigmoid(weight @ standardised pooled pixels + bias).

    mean, std: (F,) feature standardisation; weight: (A, F); bias: (A,); side: pooled image side
    (F = 3 * side * side).
    """

    def __init__(self, names: Sequence[str], mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor, side: int) -> None:
        self.names, self.mean, self.std, self.weight, self.bias, self.side = tuple(names), mean, std, weight, bias, side

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return self.names

    @staticmethod
    def features(images: torch.Tensor, side: int) -> torch.Tensor:
        """images (N, 3, H, W) -> pooled pixels (N, 3 * side * side)."""
        return F.adaptive_avg_pool2d(images.float(), side).flatten(1)

    @classmethod
    def fit(cls, images: torch.Tensor, labels: torch.Tensor, names: Sequence[str], side: int = 12,
            l2: float = 1e-2, steps: int = 100) -> PixelProbe:
        """Fit on images (N, 3, H, W) and 0/1 labels (N, A): one full-batch L-BFGS run for all attributes."""
        x = cls.features(images, side)
        mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
        x = (x - mean) / std
        y = labels.float()
        positives = y.sum(0).clamp(min=1)
        pos_weight = (y.shape[0] - positives).clamp(min=1) / positives  # balanced: 0.5 splits the classes
        weight = torch.zeros(y.shape[1], x.shape[1], requires_grad=True)
        bias = torch.zeros(y.shape[1], requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(x @ weight.T + bias, y, pos_weight=pos_weight)
            loss = loss + l2 * weight.pow(2).sum() / y.shape[1]
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        return cls(names, mean, std, weight.detach(), bias.detach(), side)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        x = (self.features(images, self.side) - self.mean) / self.std
        return torch.sigmoid(x @ self.weight.T + self.bias)


@torch.no_grad()
def balanced_accuracy(judge: AttributeScorer, images: torch.Tensor, labels: torch.Tensor,
                      names: Sequence[str], batch_size: int = 128) -> dict[str, float]:
    """Per attribute in ``names`` (columns of 0/1 ``labels`` (N, A)) that ``judge`` knows: its balanced
    accuracy at 0.5 on ``images`` (N, 3, H, W)."""
    scores = batched(judge.predict_proba, images, batch_size)
    known = list(judge.attribute_names)
    out = {}
    for column, name in enumerate(names):
        if name not in known:
            continue
        predicted, actual = scores[:, known.index(name)] >= 0.5, labels[:, column] >= 0.5
        rates = [(predicted == actual)[actual == value].float().mean().item() for value in (True, False)
                 if (actual == value).any()]
        out[name] = sum(rates) / len(rates)
    return out
