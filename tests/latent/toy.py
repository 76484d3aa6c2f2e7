"""A latent space whose answers are known, with a real (linear, deterministic) decoder and scorer.

Factors f (N, K) of the attributes plus nuisance dimensions are rotated into codes z = [f, nuisance] @ Q
(Q orthogonal, (D, D)), so attribute k's true direction is Q[k]. ``LinearFaces`` decodes z to 8x8 images
through fixed orthonormal rows W (D, 192), and encodes back exactly with W^T; ``LinearProbe`` reads
sigmoid(gain * z . Q[k]) from an image, i.e. it scores attribute k by its factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facegen.models.base import LatentModel, LatentPart

SIDE = 8
NAMES = ("Smiling", "Male", "Eyeglasses")


def orthogonal(rows: int, cols: int, seed: int) -> torch.Tensor:
    """A (rows, cols) matrix with orthonormal rows (rows <= cols)."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(cols, rows, generator=g)).Q.T.contiguous()


class LinearFaces(LatentModel):
    """A LatentModel: z (N, D) -> z @ W as (N, 3, 8, 8); encode is the exact inverse on decoded images."""

    family = "toy"

    def __init__(self, dim: int, seed: int = 1) -> None:
        super().__init__(config=None)
        self.register_buffer("weight", orthogonal(dim, 3 * SIDE * SIDE, seed))
        self.latent_parts = (LatentPart("z", dim, "gaussian"),)

    def encode(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return images.flatten(1) @ self.weight.T

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return (z @ self.weight).view(-1, 3, SIDE, SIDE)

    def sample(self, n: int, cond: torch.Tensor | None = None, generator: torch.Generator | None = None):
        return self.decode(torch.randn(n, self.weight.shape[0], generator=generator))


class LinearProbe(nn.Module):
    """An AttributeScorer: P(attribute k) = sigmoid(gain * (encoded z) . direction_k), as one linear layer."""

    def __init__(self, faces: LinearFaces, directions: torch.Tensor, names=NAMES, gain: float = 3.0) -> None:
        super().__init__()
        self.names = tuple(names)
        self.read = nn.Linear(faces.weight.shape[1], len(names), bias=False)
        with torch.no_grad():
            self.read.weight.copy_(gain * directions @ faces.weight)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return self.names

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.read(images.flatten(1))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(images))


@dataclass
class Space:
    codes: torch.Tensor      # (N, D)
    factors: torch.Tensor    # (N, K)
    labels: torch.Tensor     # (N, K) 0/1
    rotation: torch.Tensor   # (D, D); rows 0..K-1 are the true attribute directions
    model: LinearFaces
    scorer: LinearProbe

    @property
    def true_directions(self) -> torch.Tensor:
        return self.rotation[:len(NAMES)]


def make_space(n: int = 2000, dim: int = 8, rotate: bool = True, correlation: float = 0.0,
               seed: int = 0) -> Space:
    """correlation: between the Smiling and Male factors (0 = independent attributes)."""
    g = torch.Generator().manual_seed(seed)
    k = len(NAMES)
    factors = torch.randn(n, k, generator=g)
    factors[:, 1] = correlation * factors[:, 0] + (1 - correlation**2) ** 0.5 * factors[:, 1]
    nuisance = 1.5 * torch.randn(n, dim - k, generator=g)
    rotation = orthogonal(dim, dim, seed + 7) if rotate else torch.eye(dim)
    codes = torch.cat([factors, nuisance], 1) @ rotation + 0.05 * torch.randn(n, dim, generator=g)
    model = LinearFaces(dim)
    return Space(codes=codes, factors=factors, labels=(factors > 0).float(), rotation=rotation, model=model,
                 scorer=LinearProbe(model, rotation[:k]))
