"""What latent analysis needs from an attribute classifier, and batched evaluation of models on images.

Any module with ``predict_proba`` and ``attribute_names`` scores edits and names latent dimensions: the
trained :class:`facegen.models.classifier.AttributeClassifier`, or a fixed linear probe in tests.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class AttributeScorer(Protocol):
    """attribute_names: the A attribute names, in the order of ``predict_proba``'s columns."""

    @property
    def attribute_names(self) -> Sequence[str]: ...

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) in [-1, 1] -> P(attribute present) (N, A)."""


@torch.no_grad()
def batched(fn: Callable[..., torch.Tensor], inputs: torch.Tensor, batch_size: int = 256,
            cond: torch.Tensor | None = None) -> torch.Tensor:
    """``fn`` over ``inputs`` (N, ...) in chunks of ``batch_size`` rows (``fn(chunk)``, or ``fn(chunk, cond)``
    with the matching rows of ``cond`` (N, C) when given), concatenated: bounds memory on large image sets."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    outs = []
    for start in range(0, inputs.shape[0], batch_size):
        chunk = inputs[start:start + batch_size]
        outs.append(fn(chunk) if cond is None else fn(chunk, cond[start:start + batch_size]))
    return torch.cat(outs)
