"""Splits re-assigned so that every split has (about) the same joint distribution of some labels
(``facegen prepare --balance``), identities never spanning two splits."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from facegen.attributes import SPLITS
from facegen.data.records import FaceRecord, SourceDataset
from facegen.errors import FacegenError


def balance_splits(source: SourceDataset, names: Sequence[str], seed: int) -> list[FaceRecord]:
    """Re-assign splits so every split has (about) the same joint distribution of ``names``.

    ``names`` are attribute names or label heads (``race``/``age``/``gender``). Records are grouped by
    identity (records without one are their own group); big groups go first, then groups one by one go to
    the split with the largest shortfall for their strata (the joint values of ``names``) among those with
    room. Guarantees: no identity spans two splits; without identities split sizes equal the original ones
    and each stratum's count per split is within rounding (1-2 images) of proportional; with identities
    sizes and counts may also be off by about one identity's images.
    """
    known = (*source.attribute_names, "race", "age", "gender", "label")
    for name in names:
        if name not in known:
            raise FacegenError(f"--balance: unknown attribute {name!r} for {source.name} "
                               f"(known: {', '.join(known)})")
    idx = {n: source.attribute_names.index(n) for n in names if n in source.attribute_names}
    stratum = [tuple(r.attrs[idx[n]] if n in idx else getattr(r, n) for n in names) for r in source.records]
    counts = Counter(r.split for r in source.records)
    sizes = {s: counts[s] for s in SPLITS if counts[s]}
    target = {s: {k: sizes[s] * c / len(stratum) for k, c in Counter(stratum).items()} for s in sizes}
    groups: dict[object, list[int]] = {}
    for i, r in enumerate(source.records):
        groups.setdefault(r.identity if r.identity >= 0 else ("record", i), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: (-len(g), sorted(stratum[i] for i in g)))  # stable: ties stay shuffled
    have, filled, split_of = {s: Counter() for s in sizes}, Counter(), {}
    for group in order:
        need = Counter(stratum[i] for i in group)
        room = [s for s in sizes if filled[s] + len(group) <= sizes[s]] or list(sizes)
        best = max(room, key=lambda s: (sum(n * (target[s][k] - have[s][k]) for k, n in need.items()),
                                        sizes[s] - filled[s]))
        have[best].update(need)
        filled[best] += len(group)
        split_of.update({i: best for i in group})
    return [replace(r, split=split_of[i]) for i, r in enumerate(source.records)]
