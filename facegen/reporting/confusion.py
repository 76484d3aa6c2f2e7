"""Confusion-matrix figures and files for the FairFace heads (matplotlib's Agg renderer, no display needed).

``save_confusion_matrices(metrics, out_dir)`` takes validation metrics (the summary of
``FairFaceClassifier.summarize_metrics`` or a reported history entry with ``prefix="val/"``) and writes::

    confusion_matrices.json   {head: {"classes": [...], "rates": C x C, "row_normalized": C x C}}
    confusion_<head>.png      one heat map per head, rows = true class, colour = row-normalised share
"""

from __future__ import annotations

import json
import os

import numpy as np
from matplotlib.figure import Figure

from facegen.attributes import FAIRFACE_LABELS
from facegen.models.fairface import confusion_matrices


def row_normalized(matrix: np.ndarray) -> np.ndarray:
    """(C, C) -> each row divided by its sum (rows without samples stay 0): per true class, where it went."""
    sums = matrix.sum(1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros_like(matrix, dtype=np.float64), where=sums > 0)


def draw_confusion_matrix(matrix: np.ndarray, class_names: list[str] | tuple[str, ...], title: str) -> Figure:
    """A heat map of ``matrix`` (C, C; rows true, columns predicted), each cell annotated with its row share.

    Row normalisation makes rare classes as readable as common ones; the row's share of all samples is in
    the y tick labels. Uses ``matplotlib.figure.Figure`` directly (not pyplot), so no global backend state.
    """
    shares = row_normalized(matrix)
    total = matrix.sum()
    n = len(class_names)
    side = 1.6 + 0.55 * n
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    row_share = matrix.sum(1) / total if total > 0 else np.zeros(n)
    ax.set_yticks(range(n), [f"{name} ({s:.0%})" for name, s in zip(class_names, row_share)], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (share of samples)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_confusion_matrices(metrics: dict[str, float], out_dir: str, prefix: str = "") -> list[str]:
    """Write the JSON file and one PNG per head found in ``metrics`` into local ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    matrices = confusion_matrices(metrics, prefix)
    paths = []
    for head, matrix in matrices.items():
        path = os.path.join(out_dir, f"confusion_{head}.png")
        draw_confusion_matrix(matrix, FAIRFACE_LABELS[head], f"FairFace {head}").savefig(path, dpi=100)
        paths.append(path)
    report = {head: {"classes": list(FAIRFACE_LABELS[head]), "rates": matrix.tolist(),
                     "row_normalized": row_normalized(matrix).tolist()} for head, matrix in matrices.items()}
    json_path = os.path.join(out_dir, "confusion_matrices.json")
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    return [json_path] + paths
