"""Slot edits that land on conditions faces have.

A CVAE conditioned on attributes that constrain each other (one hair colour at a time; a bald head has no
bangs; a woman no beard) cannot be edited by setting one entry alone: "blond" on a black-haired face asks for
black *and* blond hair, a condition no training face had, so the decoder was never taught it. The renderer's
counterfactuals follow rules of this kind (:mod:`facegen.data.counterfactual`); an editor must not be told
them. :class:`ConditionTable` learns them from the training labels instead: it keeps every condition vector
the training faces have and finds which attributes rule each other out (pairs of values no face has although
many would by chance). :meth:`ConditionTable.nearest` then sets the edited entry and moves only the entries it
rules on to the closest combination faces have (fewest changed; among equals, the most frequent), so "blond"
turns the black hair off and "not blond" picks the commonest other colour, while glasses, smile and the rest
stay as they are: 21 attributes have far more combinations than any training set shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from facegen.latent.directions import tensor_text, text_tensor

PREFIX = "conditions"  # key prefix in a bundle's extras
MIN_EXPECTED = 5.0  # faces independence would put in a pair of values before its absence counts as a rule


class ConditionTable:
    """The distinct condition vectors of the training faces over ``names`` (rows (K, C) 0/1 float) and how
    many faces have each (counts (K,))."""

    def __init__(self, names: Sequence[str], rows: torch.Tensor, counts: torch.Tensor) -> None:
        if rows.ndim != 2 or rows.shape[1] != len(names) or counts.shape != (rows.shape[0],):
            raise ValueError(f"condition table: rows {tuple(rows.shape)} and counts {tuple(counts.shape)} do not "
                             f"match {len(names)} names")
        self.names, self.rows, self.counts = tuple(names), rows.float(), counts.float()
        self._rules: dict[int, list[int]] = {}  # constrained(), computed once per column (the service asks often)

    @classmethod
    def fit(cls, names: Sequence[str], labels: torch.Tensor) -> ConditionTable:
        """labels (N, len(names)) of training faces, 0/1 (rounded)."""
        if labels.shape[0] == 0:
            raise ValueError("condition table: no training labels to learn conditions from")
        rows, counts = torch.unique(labels.round().clamp(0, 1), dim=0, return_counts=True)
        return cls(names, rows, counts)

    def constrained(self, column: int) -> list[int]:
        """The other columns whose value depends on this one's outright: a pair of values (one each) that no
        training face has although independence would give it at least :data:`MIN_EXPECTED` faces (hair
        colours exclude each other; a woman has no beard). Chance gaps among rare pairs are not rules."""
        if column in self._rules:
            return self._rules[column]
        total = self.counts.sum()

        def ruled(other: int) -> bool:
            for a in (0.0, 1.0):
                for b in (0.0, 1.0):
                    rows_a, rows_b = self.rows[:, column] == a, self.rows[:, other] == b
                    expected = self.counts[rows_a].sum() * self.counts[rows_b].sum() / total
                    if self.counts[rows_a & rows_b].sum() == 0 and expected >= MIN_EXPECTED:
                        return True
            return False

        self._rules[column] = [other for other in range(self.rows.shape[1]) if other != column and ruled(other)]
        return self._rules[column]

    def nearest(self, cond: torch.Tensor, fixed: dict[str, float]) -> torch.Tensor:
        """cond (N, C) with the ``fixed`` entries ({name: value}) set, and the entries they constrain
        (:meth:`constrained`) moved to the closest combination training faces have with those values (fewest
        changed, ties to the commonest); every other entry stays. The fixed entries keep the asked values (a
        slider at 0.8 stays 0.8, a push past the trained values, 1.25 or -0.25, stays too) and count as on from
        0.5 up. Values no training face has together leave the rows as asked."""
        columns = [self.names.index(name) for name in fixed]
        values = torch.tensor([float(v) for v in fixed.values()])
        wanted = cond.clone()
        wanted[:, columns] = values.to(cond)
        moved = list(dict.fromkeys(columns + [c for column in columns for c in self.constrained(column)]))
        rows = self.rows[:, moved]
        match = (rows[:, :len(columns)] == (values >= 0.5).float()).all(1)
        if not match.any():
            return wanted
        candidates, index = torch.unique(rows[match], dim=0, return_inverse=True)
        counts = torch.zeros(candidates.shape[0]).index_add_(0, index, self.counts[match])
        distance = torch.cdist((wanted[:, moved] >= 0.5).float(), candidates, p=1)  # (N, K) entries that differ
        # Fewest changes first; among equals the commonest (counts < total, so it never outweighs one change)
        wanted[:, moved] = candidates[(distance - counts / (counts.sum() + 1)).argmin(1)].to(cond)
        wanted[:, columns] = values.to(cond)
        return wanted

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
