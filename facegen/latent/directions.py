"""Attribute directions in a latent space, for editing ("smile vector") and for reading what a code means.

Two ways to find the direction of attribute a from codes z (N, D) and 0/1 labels:

``mean_diff``  mean(z | a = 1) - mean(z | a = 0) (Larsen et al. 2016; White 2016). Cheap and robust, but it
               also picks up every attribute correlated with a in the data (smiling faces are more often
               female in CelebA, so the smile vector also feminises).
``boundary``   the normal of a linear decision boundary, an L2 logistic regression (InterFaceGAN, Shen et al.
               2020). It separates a given everything else the codes say, so correlated attributes leak less.

Conditional editing (InterFaceGAN's "conditional manipulation") is built on either: the target direction is
projected orthogonal to the span of the directions of attributes to keep fixed (:meth:`Directions.conditional`),
so moving along it leaves their projections, hence a linear read-out of them, unchanged.

Every direction is a unit vector with a scale, the standard deviation of the codes along it, so an edit of
strength 1.0 moves a code one typical spread of the data, whatever the family's latent scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

METHODS = ("mean_diff", "boundary")


def text_tensor(text: str) -> torch.Tensor:
    """Bundle extras hold tensors only (loaded with weights_only=True): strings travel as UTF-8 bytes
    (:func:`tensor_text` reads them back)."""
    return torch.tensor(list(text.encode()), dtype=torch.uint8)


def tensor_text(tensor: torch.Tensor) -> str:
    return bytes(tensor.tolist()).decode()


@dataclass
class Directions:
    """Attribute directions fitted on one latent space.

    names: the A attribute names. vectors: (A, D) unit directions. scales: (A,) std of the codes along each.
    cov: (D, D) covariance of the fitted codes, giving the scale of any other direction (e.g. a conditional
    one). method: ``mean_diff`` or ``boundary``.
    """

    names: tuple[str, ...]
    vectors: torch.Tensor
    scales: torch.Tensor
    cov: torch.Tensor
    method: str

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"unknown attribute {name!r} (known: {', '.join(self.names)})")
        return self.names.index(name)

    def vector(self, name: str) -> torch.Tensor:
        """The unit direction (D,) of attribute ``name``."""
        return self.vectors[self.index(name)]

    def scale_along(self, direction: torch.Tensor) -> torch.Tensor:
        """Std of the fitted codes' projection on the unit ``direction`` (D,): scalar tensor."""
        return (direction @ self.cov @ direction).clamp(min=0).sqrt()

    def conditional(self, name: str, keep: Sequence[str]) -> torch.Tensor:
        """The unit direction (D,) of ``name`` with the span of the ``keep`` attributes' directions removed.

        The least-squares residual of the target on the keep directions is exactly the component orthogonal
        to their span, even when the keep directions are not orthogonal to each other (plain Gram-Schmidt on
        the target alone would not be) or are linearly dependent (lstsq handles rank deficiency).
        """
        if name in keep:
            raise ValueError(f"attribute {name!r} cannot be both edited and kept fixed")
        target = self.vector(name)
        if not keep:
            return target
        basis = self.vectors[[self.index(k) for k in keep]].T.double()  # (D, k)
        coefficients = torch.linalg.lstsq(basis, target.double()[:, None]).solution
        residual = (target.double() - (basis @ coefficients)[:, 0]).to(target.dtype)
        norm = residual.norm()
        if norm < 1e-3:  # the edit would have to move along the kept attributes themselves
            raise ValueError(f"attribute {name!r} lies in the span of the kept attributes {list(keep)}; "
                             "nothing is left to edit once they are held fixed")
        return residual / norm

    def to_extras(self, prefix: str = "directions") -> dict[str, torch.Tensor]:
        """Named tensors for :attr:`facegen.bundle.Bundle.extras` under ``prefix/``."""
        return {f"{prefix}/vectors": self.vectors, f"{prefix}/scales": self.scales, f"{prefix}/cov": self.cov,
                f"{prefix}/names": text_tensor("\n".join(self.names)), f"{prefix}/method": text_tensor(self.method)}

    @classmethod
    def from_extras(cls, extras: dict[str, torch.Tensor], prefix: str = "directions") -> Directions:
        """Inverse of :meth:`to_extras`; a missing key is a ValueError naming the prefix."""
        try:
            return cls(names=tuple(tensor_text(extras[f"{prefix}/names"]).split("\n")),
                       vectors=extras[f"{prefix}/vectors"].float(), scales=extras[f"{prefix}/scales"].float(),
                       cov=extras[f"{prefix}/cov"].float(), method=tensor_text(extras[f"{prefix}/method"]))
        except KeyError as exc:
            raise ValueError(f"extras hold no directions under {prefix!r} (missing {exc.args[0]})") from None


def _check_labels(codes: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> None:
    if codes.ndim != 2 or labels.ndim != 2 or labels.shape[0] != codes.shape[0]:
        raise ValueError(f"codes (N, D) and labels (N, A) must share N; got {codes.shape} and {labels.shape}")
    if labels.shape[1] != len(names):
        raise ValueError(f"labels have {labels.shape[1]} columns but {len(names)} names were given")
    if any("\n" in name for name in names):
        raise ValueError("attribute names must not contain newlines")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    for column, name in enumerate(names):
        if labels[:, column].min() == labels[:, column].max():
            raise ValueError(f"attribute {name!r}: all labels are {int(labels[0, column])}; a direction needs "
                             "positive and negative examples")


def _boundary_normal(codes: np.ndarray, y: np.ndarray, C: float) -> np.ndarray:
    """Normal (D,) of an L2 logistic regression boundary, in the codes' own coordinates."""
    from sklearn.linear_model import LogisticRegression

    # Standardising conditions the solver (latent dims differ in scale by orders of magnitude); the weights
    # are mapped back with 1 / std so the normal is a direction in z, not in standardised z.
    mean, std = codes.mean(0), codes.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    clf = LogisticRegression(C=C, max_iter=2000).fit((codes - mean) / std, y)
    return clf.coef_[0] / std


def fit_directions(codes: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, names: Sequence[str],
                   method: str = "mean_diff", C: float = 1.0) -> Directions:
    """Directions of the A attributes from codes (N, D) and 0/1 labels (N, A) with column names ``names``.

    method: ``mean_diff`` or ``boundary`` (see the module docstring; conditional editing is applied later
    with :meth:`Directions.conditional`). C: inverse L2 strength of the boundary's logistic regression.
    """
    if method not in METHODS:
        raise ValueError(f"unknown direction method {method!r} (known: {', '.join(METHODS)}; conditional "
                         "editing uses Directions.conditional on either)")
    z = np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    _check_labels(z, y, names)
    vectors = []
    for column in range(y.shape[1]):
        positive = y[:, column] == 1
        if method == "mean_diff":
            vector = z[positive].mean(0) - z[~positive].mean(0)
        else:
            vector = _boundary_normal(z, positive.astype(int), C)
        vectors.append(vector / max(np.linalg.norm(vector), 1e-12))
    cov = torch.from_numpy(np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])).float()
    units = torch.from_numpy(np.stack(vectors)).float()
    scales = torch.einsum("ad,de,ae->a", units, cov, units).clamp(min=0).sqrt()
    return Directions(names=tuple(names), vectors=units, scales=scales, cov=cov, method=method)
