"""Attribute directions kept in model bundles, so analysis, editing, augmentation and serving share one fit.

Directions live in the bundle's ``extras.pt`` under ``directions/<method>/...`` (one set per fitting method,
see :mod:`facegen.latent.directions`). ``jobs/analyze.py`` fits and stores them; the edit service and
``jobs/augment.py`` read them, fitting on the bundle's own training shards only when a bundle has none.
"""

from __future__ import annotations

from typing import Sequence

import torch

from facegen.latent.directions import METHODS, Directions, fit_directions
from facegen.latent.scoring import batched


def direction_prefix(method: str) -> str:
    """Key prefix of one method's directions in a bundle's extras."""
    if method not in METHODS:
        raise ValueError(f"unknown direction method {method!r} (known: {', '.join(METHODS)})")
    return f"directions/{method}"


def stored_directions(extras: dict[str, torch.Tensor], method: str) -> Directions | None:
    """The ``method`` directions held in a bundle's extras, or None when it has none."""
    prefix = direction_prefix(method)
    if f"{prefix}/vectors" not in extras:
        return None
    return Directions.from_extras(extras, prefix)


@torch.no_grad()
def encode_batch(model, batch: dict[str, torch.Tensor], batch_size: int = 256) -> torch.Tensor:
    """Codes (N, D) of ``batch["image"]`` (N, 3, H, W), conditioned as the model needs."""
    return batched(model.encode, batch["image"], batch_size, model.condition_of(batch))


def fit_bundle_directions(model, batch: dict[str, torch.Tensor], names: Sequence[str],
                          methods: Sequence[str] = METHODS) -> dict[str, Directions]:
    """Fit every ``method``'s directions on the codes of a labelled ``batch`` (image (N,3,H,W), attrs (N,A)).

    Attributes that are constant in the batch are left out (a direction needs both classes).
    """
    codes = encode_batch(model, batch)
    attrs = batch["attrs"]
    varying = [i for i in range(attrs.shape[1]) if attrs[:, i].min() != attrs[:, i].max()]
    if not varying:
        raise ValueError("no attribute varies in the given images: cannot fit any direction")
    labels = attrs[:, varying].round().long()
    chosen = [names[i] for i in varying]
    return {method: fit_directions(codes, labels, chosen, method=method) for method in methods}


def directions_extras(directions: dict[str, Directions]) -> dict[str, torch.Tensor]:
    """Named tensors for :func:`facegen.bundle.update_extras` from ``{method: Directions}``."""
    extras: dict[str, torch.Tensor] = {}
    for method, found in directions.items():
        extras.update(found.to_extras(direction_prefix(method)))
    return extras
