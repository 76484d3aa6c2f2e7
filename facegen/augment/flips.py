"""Counterfactual variants from a conditional editor: each variant flips one attribute of its source.

A CVAE conditioned on attributes edits by decoding the same z under another condition, so it can make the
variant a low-data classifier lacks most: the same face with one attribute the other way round (glasses on a
face without, a smile off a smiling one). With ``--flip A,B,...`` (or ``all``: every attribute slot), variant
k of a source sets the k-th attribute of a per-source shuffle of the list (drawn from ``(seed, source)``, so
the output does not depend on how Ray Data batches the images; no repeats while K <= the list's length) to the
opposite of the source's label. The slots the flipped one rules on (another hair colour, a beard on a woman)
move to the nearest combination training faces have (:class:`facegen.latent.conditions.ConditionTable`), and
the variant is labelled by its whole new condition: the manifest's ``relabels`` holds every entry that
changed, the label files take them (:mod:`facegen.augment.celeba`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from facegen.errors import FacegenError
from facegen.latent.conditions import ConditionTable
from facegen.latent.edit import edit_codes, latent_slots, pushed

FLIP = "flip"  # the manifest's method for these variants


def stable_seed(text: str) -> int:
    """A stable 32-bit number per source or attribute name (Python's hash() differs per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")


def flip_names(text: str, model) -> tuple[str, ...]:
    """``--flip`` (``"all"`` or ``"A,B"``) -> the attribute slots to flip; FacegenError for a model or a name
    that cannot."""
    named = tuple(model.condition_attributes())  # a config list for a CVAE
    if not named:
        raise FacegenError("--flip needs a model conditioned on attributes (a CVAE with condition: attrs)")
    names = named if text.strip() == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in named:
            raise FacegenError(f"--flip: {name!r} is not an attribute slot of the model (slots: {', '.join(named)})")
    if not names or len(set(names)) != len(names):
        raise FacegenError(f"--flip: expected 'all' or distinct attribute names, got {text!r}")
    return names


def flipped_attribute(names: tuple[str, ...], seed: int, source: str, k: int) -> str:
    """The attribute variant k (1..K) of ``source`` flips."""
    order = np.random.default_rng([seed, stable_seed(source)]).permutation(len(names))
    return names[order[(k - 1) % len(names)]]


def flip_codes(model, codes: torch.Tensor, chosen: list[str], table: ConditionTable | None,
               push: float = 0.0) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """codes (N, D) with row i's attribute ``chosen[i]`` set to the opposite of its current value, ``push``
    past it (1 + push, or -push; and, with ``table``, the entries it rules on moved); returns (edited codes,
    per row {attribute: new 0/1 label} for every condition entry that changed)."""
    slots = latent_slots(model)
    named = list(model.condition_attributes())
    columns = [slots[n].start for n in named]
    edited = codes.clone()
    targets = [(name, 1 - round(float(codes[i, slots[name].start]))) for i, name in enumerate(chosen)]
    for name, value in set(targets):  # one latent edit per (attribute, value): a handful per batch
        rows = [i for i, t in enumerate(targets) if t == (name, value)]
        edited[rows] = edit_codes(model, codes[rows], {name: pushed(value, push)}, conditions=table)
    before, after = (codes[:, columns] >= 0.5).float(), (edited[:, columns] >= 0.5).float()
    changes = [{n: int(after[i, c]) for c, n in enumerate(named) if after[i, c] != before[i, c]}
               for i in range(codes.shape[0])]
    return edited, changes
