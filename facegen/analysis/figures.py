"""The pictures of a latent analysis: traversals per family, InfoGAN code effects, multi-panel latent maps.

Traversal rows, by what a family's latent means: a VAE's / CVAE's most active Gaussian dimensions (variance of
the codes), an AE's principal components (its raw dimensions mean little), an InfoGAN's / BEGAN's continuous
codes swept over their prior range [-1, 1] and each categorical code set to every class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from facegen.latent import grids
from facegen.latent.edit import edit_codes, latent_slots
from facegen.latent.maps import MAX_CLASSES, project_2d, save_figure
from facegen.latent.scoring import AttributeScorer, batched
from facegen.models.base import LatentModel


def active_dims(codes: torch.Tensor, candidates: Sequence[int], k: int) -> list[int]:
    """The ``k`` of ``candidates`` whose codes (N, D) vary most (a VAE's collapsed dimensions do not)."""
    variance = codes[:, list(candidates)].var(0)
    return [candidates[i] for i in variance.argsort(descending=True)[:k].tolist()]


@dataclass
class SweepRows:
    """labels: one per row; codes: (rows, steps, D) ready to decode."""

    labels: list[str]
    codes: torch.Tensor


def dimension_rows(z: torch.Tensor, codes: torch.Tensor, dims: Sequence[int], steps: int) -> SweepRows:
    """Sweep each of ``dims`` of source code z (D,) over its 2%..98% range on ``codes`` (N, D)."""
    values = grids.traversal_values(codes, list(dims), steps)
    rows = z.expand(len(dims), steps, z.shape[-1]).clone()
    for row, dim in enumerate(dims):
        rows[row, :, dim] = values[row]
    return SweepRows([f"z[{d}]" for d in dims], rows)


def component_rows(z: torch.Tensor, codes: torch.Tensor, components: torch.Tensor, steps: int) -> SweepRows:
    """Move z (D,) along each principal component (rows of ``components`` (k, D)), setting its coordinate
    to values spanning 2%..98% of the codes' coordinates along it."""
    mean = codes.mean(0)
    coords = (codes - mean) @ components.T  # (N, k)
    values = grids.traversal_values(coords, list(range(components.shape[0])), steps)  # (k, steps)
    own = (z - mean) @ components.T  # (k,)
    rows = z + (values - own[:, None])[..., None] * components[:, None, :]
    return SweepRows([f"PC{i + 1}" for i in range(components.shape[0])], rows)


def code_rows(model: LatentModel, z: torch.Tensor, steps: int) -> SweepRows:
    """An InfoGAN's continuous codes, each swept over [-1, 1]."""
    labels, rows = [], []
    for name, slot in latent_slots(model).items():
        if slot.kind == "value":
            row = z.expand(steps, z.shape[-1]).clone()
            row[:, slot.start] = torch.linspace(-1, 1, steps)
            labels.append(name)
            rows.append(row)
    return SweepRows(labels, torch.stack(rows) if rows else z.new_zeros(0, steps, z.shape[-1]))


def class_rows(model: LatentModel, z: torch.Tensor) -> list[SweepRows]:
    """Per categorical code, one row: z (D,) with that code set to each class in turn."""
    out = []
    for part in model.latent_parts:
        if part.kind != "categorical":
            continue
        slot = latent_slots(model)[part.name]
        row = z.expand(slot.size, z.shape[-1]).clone()
        row[:, slot.start:slot.start + slot.size] = torch.eye(slot.size)
        out.append(SweepRows([part.name], row[None]))
    return out


@torch.no_grad()
def sweep_picture(model: LatentModel, rows: SweepRows, path: str) -> str:
    """Decode every row and save the grid (one row per label) as a PNG."""
    steps = rows.codes.shape[1]
    images = batched(model.decode, rows.codes.reshape(-1, rows.codes.shape[-1]), 64)
    return grids.save_png(grids.image_grid(images, nrow=steps), path)


@dataclass(frozen=True)
class Setting:
    """One lever position: ``label`` for tables, ``request`` for ``edit_codes``, ``kind`` value / class."""

    label: str
    request: dict[str, float]
    kind: str


def code_settings(model: LatentModel) -> list[Setting]:
    """An InfoGAN's code levers as edit requests: every continuous code at -1 and +1, every class."""
    settings = []
    for name, slot in latent_slots(model).items():
        if slot.kind == "value":
            settings += [Setting(f"{name}={v:+g}", {name: v}, "value") for v in (-1.0, 1.0)]
        else:
            settings += [Setting(f"{name}={k}", {name: k}, "class") for k in range(slot.size)]
    return settings


@torch.no_grad()
def setting_scores(model: LatentModel, codes: torch.Tensor, scorer: AttributeScorer,
                   settings: list[Setting]) -> np.ndarray:
    """Mean P(attribute) (S, A) over ``codes`` (N, D) decoded with each setting applied."""

    out = []
    for setting in settings:
        images = batched(model.decode, edit_codes(model, codes, setting.request), 64)
        out.append(batched(scorer.predict_proba, images, 64).mean(0).numpy())
    return np.stack(out)


def class_effects_markdown(settings: list[Setting], scores: np.ndarray, names: Sequence[str]) -> str:
    """Per categorical class: the attribute its setting raises most above the mean over classes."""
    classes = [i for i, s in enumerate(settings) if s.kind == "class"]
    if not classes:
        return ""
    lines = ["| code | raises most | by | lowers most | by |", "|---|---|---:|---|---:|"]
    deviation = scores[classes] - scores[classes].mean(0)
    for row, index in enumerate(classes):
        up, down = int(deviation[row].argmax()), int(deviation[row].argmin())
        lines.append(f"| {settings[index].label} | {names[up]} | {deviation[row, up]:+.3f} | {names[down]} | "
                     f"{deviation[row, down]:+.3f} |")
    return "\n".join(lines) + "\n"


def map_panels(codes: torch.Tensor, colors: Mapping[str, tuple[np.ndarray, Sequence[str] | None]], path: str,
               method: str, seed: int = 0) -> str:
    """One PNG: the codes (N, D) projected once by ``method`` (pca / tsne), one panel per colouring
    (name -> (values (N,), class names or None))."""
    from matplotlib.figure import Figure

    coords = project_2d(codes, method, seed)
    panels = list(colors.items()) or [("", (np.zeros(len(coords)), None))]
    fig = Figure(figsize=(4.2 * len(panels), 4))
    size = max(2.0, 20.0 / np.sqrt(len(coords) / 100))
    for i, (name, (values, class_names)) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if len(np.unique(values)) <= MAX_CLASSES:
            for value in np.unique(values):
                label = class_names[int(value)] if class_names is not None and 0 <= value < len(class_names) else value
                mask = values == value
                ax.scatter(coords[mask, 0], coords[mask, 1], s=size, alpha=0.7, label=str(label))
            ax.legend(fontsize=6, markerscale=2, loc="best")
        else:
            points = ax.scatter(coords[:, 0], coords[:, 1], c=values.astype(float), s=size, cmap="viridis")
            fig.colorbar(points, ax=ax)
        ax.set_title(f"{name} ({method.upper()})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)
