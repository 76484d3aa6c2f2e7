"""Slot edits that land on conditions faces have.

A CVAE conditioned on attributes that constrain each other (one hair colour at a time; a bald head has no
bangs; a woman no beard) cannot be edited by setting one entry alone: "blond" on a black-haired face asks for
black *and* blond hair, a condition no training face had, so the decoder was never taught it. The renderer's
counterfactuals follow rules of this kind (:mod:`facegen.data.counterfactual`); an editor must not be told
them. :class:`ConditionTable` learns them from the training labels instead: it keeps every condition vector
the training faces have, and :meth:`ConditionTable.nearest` moves an edited condition to the closest of them
that has the asked value (fewest other entries changed; among equals, the most frequent), so "blond" turns the
black hair off and "not blond" picks the commonest other colour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from facegen.latent.directions import tensor_text, text_tensor

PREFIX = "conditions"  # key prefix in a bundle's extras


class ConditionTable:
    """The distinct condition vectors of the training faces over ``names`` (rows (K, C) 0/1 float) and how
    many faces have each (counts (K,))."""

    def __init__(self, names: Sequence[str], rows: torch.Tensor, counts: torch.Tensor) -> None:
        if rows.ndim != 2 or rows.shape[1] != len(names) or counts.shape != (rows.shape[0],):
            raise ValueError(f"condition table: rows {tuple(rows.shape)} and counts {tuple(counts.shape)} do not "
                             f"match {len(names)} names")
        self.names, self.rows, self.counts = tuple(names), rows.float(), counts.float()

    @classmethod
    def fit(cls, names: Sequence[str], labels: torch.Tensor) -> ConditionTable:
        """labels (N, len(names)) of training faces, 0/1 (rounded)."""
        if labels.shape[0] == 0:
            raise ValueError("condition table: no training labels to learn conditions from")
        rows, counts = torch.unique(labels.round().clamp(0, 1), dim=0, return_counts=True)
        return cls(names, rows, counts)

    def nearest(self, cond: torch.Tensor, fixed: dict[str, float]) -> torch.Tensor:
        """cond (N, C) with the ``fixed`` entries ({name: value}) set, each row then moved to the closest training
        condition with those values (rounded to 0/1): fewest other entries changed, ties to the commonest. The
        fixed entries keep the asked values (a slider at 0.8 stays 0.8). Values no training face has together
        leave the rows as asked (only the entries set)."""
        columns = [self.names.index(name) for name in fixed]
        values = torch.tensor([float(v) for v in fixed.values()])
        wanted = cond.clone()
        wanted[:, columns] = values.to(cond)
        match = (self.rows[:, columns] == values.round()).all(1)
        if not match.any():
            return wanted
        candidates, counts = self.rows[match], self.counts[match]
        distance = torch.cdist(wanted.round().float(), candidates, p=1)  # (N, K) entries that differ
        # Fewest changes first; among equals the commonest (counts < total, so it never outweighs one change)
        chosen = candidates[(distance - counts / (counts.sum() + 1)).argmin(1)].to(cond)
        chosen[:, columns] = values.to(cond)
        return chosen

    def to_extras(self, prefix: str = PREFIX) -> dict[str, torch.Tensor]:
        """Named tensors for a bundle's extras (:func:`facegen.bundle.update_extras`)."""
        return {f"{prefix}/names": text_tensor("\n".join(self.names)), f"{prefix}/rows": self.rows.to(torch.uint8),
                f"{prefix}/counts": self.counts.long()}

    @classmethod
    def from_extras(cls, extras: dict[str, torch.Tensor], prefix: str = PREFIX) -> ConditionTable | None:
        """The table a bundle's extras hold, or None."""
        if f"{prefix}/rows" not in extras:
            return None
        names = tensor_text(extras[f"{prefix}/names"]).split("\n")
        return cls(names, extras[f"{prefix}/rows"].float(), extras[f"{prefix}/counts"].float())
