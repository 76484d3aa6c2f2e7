"""2-D maps of a latent space: PCA or t-SNE of the codes, as a scatter coloured by an attribute or class.

PCA is linear and global (distances along the two main axes are real); t-SNE (van der Maaten & Hinton 2008)
keeps neighbourhoods and shows clusters, but distances between clusters and cluster sizes mean little, and it
costs O(N log N) per iteration: subsample to a few thousand codes first. Figures are drawn on a bare
:class:`matplotlib.figure.Figure` (Agg canvas, no pyplot), so nothing touches a global backend or state.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from facegen.io import atomic_path

MAP_METHODS = ("pca", "tsne")
MAX_CLASSES = 20  # integer colours with more distinct values are drawn as a continuous scale


def save_figure(fig, path: str) -> str:
    """Save a matplotlib figure as PNG atomically (temp name, then rename); returns ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def project_2d(codes: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0,
               perplexity: float = 30.0) -> np.ndarray:
    """codes (N, D) -> coordinates (N, 2) by ``pca`` or ``tsne`` (seeded, PCA-initialised, so reproducible)."""
    x = np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.float64)
    if method not in MAP_METHODS:
        raise ValueError(f"unknown map method {method!r} (known: {', '.join(MAP_METHODS)})")
    if x.ndim != 2 or x.shape[1] < 2 or x.shape[0] < 4:
        raise ValueError(f"codes must be (N, D) with N >= 4 and D >= 2, got shape {x.shape}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE

    # t-SNE needs perplexity < N; a third of N keeps tiny sets meaningful.
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (x.shape[0] - 1) / 3), init="pca", random_state=seed)
    return tsne.fit_transform(x)


def _is_categorical(color: np.ndarray) -> bool:
    if color.dtype.kind in "bUSO":
        return True
    return color.dtype.kind in "iu" and len(np.unique(color)) <= MAX_CLASSES


def latent_map(codes: torch.Tensor | np.ndarray, path: str | None = None, color: Sequence | np.ndarray | None = None,
               method: str = "pca", class_names: Sequence[str] | None = None, title: str | None = None,
               color_label: str = "", seed: int = 0) -> np.ndarray:
    """Map codes (N, D) to 2-D and, when ``path`` is given, draw the scatter there as PNG.

    color: (N,) per-code values: classes (ints, bools or strings, at most 20 distinct; a legend, with
        ``class_names[i]`` for integer class i when given) or numbers (a colour bar labelled ``color_label``).
    Returns the coordinates (N, 2).
    """
    coords = project_2d(codes, method, seed)
    if path is None:
        return coords
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    size = max(2.0, 20.0 / np.sqrt(len(coords) / 100))  # smaller dots as the cloud gets denser
    if color is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, alpha=0.7)
    else:
        values = np.asarray(color.detach().cpu() if isinstance(color, torch.Tensor) else color)
        if values.shape != (len(coords),):
            raise ValueError(f"color must have one value per code ({len(coords)}), got shape {values.shape}")
        if _is_categorical(values):
            for value in np.unique(values):
                name = class_names[int(value)] if class_names is not None and values.dtype.kind in "iub" else value
                mask = values == value
                ax.scatter(coords[mask, 0], coords[mask, 1], s=size, alpha=0.7, label=str(name))
            ax.legend(fontsize=7, markerscale=2, loc="best", title=color_label or None)
        else:
            points = ax.scatter(coords[:, 0], coords[:, 1], c=values.astype(float), s=size, alpha=0.8,
                                cmap="viridis")
            fig.colorbar(points, ax=ax, label=color_label)
    axis = "PC" if method == "pca" else "t-SNE "
    ax.set_xlabel(f"{axis}1")
    ax.set_ylabel(f"{axis}2")
    ax.set_title(title or f"Latent space ({method.upper()})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return coords
