"""How well a model's first categorical code sorts labelled images into their classes (InfoGAN, BEGAN on
digits): the code read back from each image, the best one-to-one assignment of codes to classes, and the share
of images that assignment gets right."""

from __future__ import annotations

import numpy as np
import torch

from facegen.models.base import LatentModel


def predicted_categories(model: LatentModel, images: torch.Tensor) -> torch.Tensor:
    """The first categorical code ``model.encode`` reads from images (N, 3, H, W): (N,) int64."""
    start = 0
    for part in model.latent_parts:
        if part.kind == "categorical":
            return model.encode(images)[:, start:start + part.size].argmax(1)
        start += part.size
    raise ValueError("the model's latent has no categorical part")


def matched_mass(confusion: np.ndarray) -> float:
    """Mass of ``confusion`` (codes x classes, counts or fractions) on the best one-to-one assignment of
    codes to classes (Hungarian algorithm; scipy comes with scikit-learn)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return float(confusion[rows, cols].sum())


@torch.no_grad()
def categorical_code_accuracy(model: LatentModel, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images (N, 3, H, W) whose categorical code, after the best one-to-one assignment of
    codes to classes, equals their label (N,) int (rows with label -1 are ignored)."""
    keep = labels >= 0
    codes = predicted_categories(model, images[keep]).cpu().numpy()
    classes = labels[keep].cpu().numpy()
    confusion = np.zeros((codes.max(initial=0) + 1, classes.max(initial=0) + 1))
    np.add.at(confusion, (codes, classes), 1)
    return matched_mass(confusion) / max(len(codes), 1)


