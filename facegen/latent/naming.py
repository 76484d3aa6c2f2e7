"""Name latent dimensions automatically: traverse each one, score the decoded faces, report what moves.

For every dimension (or every row of an orthonormal ``basis``, e.g. an AE's PCA components from
:class:`facegen.latent.sampler.PCAKDESampler`, whose raw dimensions mean little), a few source codes are swept
along it over the data's range (:func:`facegen.latent.grids.traversal_values`, 2% to 98% quantile) and the
decoded faces scored by an :class:`~facegen.latent.scoring.AttributeScorer`. Per dimension and attribute the
mean probability over sources gives a curve over the sweep; its end-to-end change is the **effect** (signed,
in probability units, so effects of different attributes compare directly) and its Spearman rank correlation
with the sweep value the **monotonicity** (1: the attribute only ever grows along the dimension). A dimension
is named after the attribute with the largest |effect|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from facegen.latent.grids import traversal_values, traverse
from facegen.latent.maps import save_figure
from facegen.latent.scoring import AttributeScorer
from facegen.models.base import LatentModel


@dataclass
class DimensionName:
    """dim: latent dimension (or basis row) index; label: ``z[i]`` or ``basis[i]``; attribute: the one it
    drives most; effect: that attribute's signed change in mean probability from the low to the high end;
    monotonicity: Spearman rho of that change; effects: every attribute's effect, in the scorer's order."""

    dim: int
    label: str
    attribute: str
    effect: float
    monotonicity: float
    effects: dict[str, float]


class _InBasis:
    """``model`` seen in rotated coordinates c = z @ rotation.T (rotation (D, D) orthogonal), so that
    :func:`traverse`, which sets coordinates, moves codes along the rotation's rows."""

    def __init__(self, model: LatentModel, rotation: torch.Tensor) -> None:
        self.model, self.rotation = model, rotation
        self.latent_parts = model.latent_parts

    def decode(self, c: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.decode(c @ self.rotation, cond)


def _rotation(basis: torch.Tensor) -> torch.Tensor:
    """An orthogonal (D, D) whose first M rows are ``basis`` (M, D) (orthonormal rows required)."""
    m, d = basis.shape
    if not torch.allclose(basis @ basis.T, torch.eye(m, dtype=basis.dtype), atol=1e-4):
        raise ValueError("basis rows must be orthonormal (PCA components are; attribute directions are not)")
    # QR of [basis.T | I]: Q's first M columns span the basis and later columns are orthogonal to all earlier
    # ones, so replacing the first M by the basis itself (fixing QR's signs) keeps Q orthogonal.
    q = torch.linalg.qr(torch.cat([basis.T, torch.eye(d, dtype=basis.dtype)], 1).double()).Q[:, :d]
    q[:, :m] = basis.T.double()
    return q.T.to(basis.dtype)


def _spearman(values: np.ndarray, curve: np.ndarray) -> float:
    if np.ptp(curve) < 1e-6:  # flat up to float32 rounding: no order to correlate (scipy would give NaN)
        return 0.0
    return float(spearmanr(values, curve).statistic)


@torch.no_grad()
def name_dimensions(model: LatentModel, codes: torch.Tensor, scorer: AttributeScorer,
                    dims: list[int] | None = None, basis: torch.Tensor | None = None, steps: int = 9,
                    n_sources: int = 16, quantile: float = 0.02, seed: int = 0,
                    dims_per_batch: int = 16) -> list[DimensionName]:
    """Name latent dimensions of ``model`` from reference codes (N, D), sorted by |effect|, largest first.

    dims: indices to analyse (default all D, or all M basis rows). basis: (M, D) orthonormal directions to
    traverse instead of the raw dimensions. steps: points per sweep. n_sources: codes swept (a seeded random
    subset of ``codes``). dims_per_batch: dimensions decoded per call, bounding memory to
    dims_per_batch * steps images.
    """
    view, coords, prefix = model, codes, "z"
    if basis is not None:
        rotation = _rotation(basis.to(codes))
        view, coords, prefix = _InBasis(model, rotation), codes @ rotation.T, "basis"
    dims = list(range(coords.shape[1] if basis is None else basis.shape[0])) if dims is None else list(dims)
    generator = torch.Generator().manual_seed(seed)
    sources = coords[torch.randperm(coords.shape[0], generator=generator)[:n_sources]]
    names = list(scorer.attribute_names)
    curves = []  # per chunk of dims: mean probability (len(chunk), steps, A)
    for start in range(0, len(dims), dims_per_batch):
        chunk = dims[start:start + dims_per_batch]
        values = traversal_values(coords, chunk, steps, quantile)
        total = 0
        for z in sources:
            total = total + scorer.predict_proba(traverse(view, z, chunk, values)).view(len(chunk), steps, -1)
        curves.append((total / len(sources)).cpu().numpy())
    curve = np.concatenate(curves)  # (len(dims), steps, A)
    effects = curve[:, -1] - curve[:, 0]  # (len(dims), A)
    rows = []
    sweep = np.arange(steps)  # values increase along the sweep, so ranks of the step index suffice
    for i, dim in enumerate(dims):
        best = int(np.abs(effects[i]).argmax())
        rows.append(DimensionName(dim=dim, label=f"{prefix}[{dim}]", attribute=names[best],
                                  effect=float(effects[i, best]), monotonicity=_spearman(sweep, curve[i, :, best]),
                                  effects=dict(zip(names, effects[i].tolist()))))
    return sorted(rows, key=lambda row: -abs(row.effect))


def naming_table_markdown(rows: list[DimensionName]) -> str:
    """A Markdown table, one line per row: dimension, attribute, effect, monotonicity."""
    lines = ["| dimension | attribute | effect | monotonicity |", "|---|---|---:|---:|"]
    lines += [f"| {r.label} | {r.attribute} | {r.effect:+.3f} | {r.monotonicity:+.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def naming_figure(rows: list[DimensionName], path: str, title: str = "Effect of each latent dimension") -> str:
    """Heatmap PNG at ``path``: rows x attributes, coloured by signed effect (red raises, blue lowers)."""
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("naming_figure: no rows to draw")
    attributes = list(rows[0].effects)
    matrix = np.array([[row.effects[a] for a in attributes] for row in rows])
    limit = max(float(np.abs(matrix).max()), 1e-6)  # symmetric scale: white means no effect
    fig = Figure(figsize=(2 + 0.4 * len(attributes), 1.5 + 0.3 * len(rows)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(attributes)), attributes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [row.label for row in rows], fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="change in P(attribute)")
    fig.tight_layout()
    return save_figure(fig, path)
