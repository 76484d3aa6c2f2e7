"""Edit faces by attribute: encode, move the code, decode, and score before and after.

Two levers, chosen per attribute name:

* **Latent slots**, the model's own handles, set to a value. They come from ``latent_parts``:
  a ``condition`` part whose entries have names (a CVAE conditioned on attributes: ``{"Smiling": 1.0}`` sets
  that entry to 1.0, i.e. smiling, 0.0 not smiling); an unnamed ``condition`` part or a ``categorical`` part
  is one slot named after the part whose value is a class index (a digit CVAE's ``{"condition": 3}``, an
  InfoGAN's ``{"code0": 2}``); a ``uniform`` part gives one slot per entry, ``"<part>/<i>"`` (an InfoGAN's
  ``{"continuous/0": 0.8}``). A part's entry names come from ``model.entry_names(part)``. A slot wins over a
  direction of the same name: the model's own lever is the faithful one.
* **Directions** (:mod:`facegen.latent.directions`): ``z += strength * scale * direction``, strength in
  standard deviations of the codes along the direction; with ``method="conditional"`` each direction first
  has the span of the ``keep`` attributes' directions projected out.

The scores compare the edited images with the *reconstructions* (decode of the unedited codes), not the
inputs, so they measure the edit and not the autoencoder's reconstruction error. Put the model (and scorer)
in eval mode first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from facegen.latent.conditions import ConditionTable
from facegen.latent.directions import Directions
from facegen.latent.scoring import AttributeScorer, batched
from facegen.models.base import LatentModel

EDIT_METHODS = ("mean_diff", "boundary", "conditional")
# The one unit of an edit's strength: standard deviations of the training codes along the direction (a slot is
# set to its value instead). The one limit, used by the API, the sliders, augmentation and the analysis: beyond
# it decoders produce garbage, not edits.
MAX_STRENGTH = 10.0
# A named condition entry trains on 0 and 1; set up to this far past them (1 + push, -push) the decoder
# exaggerates the attribute (``facegen evaluate --slot-push`` measures it; the page's condition sliders reach it)
MAX_SLOT_PUSH = 1.0


@dataclass(frozen=True)
class Slot:
    """Latent entries ``start:start + size`` settable by name; kind ``value`` (one entry set to the given
    number) or ``class`` (a one-hot set to the given class index)."""

    name: str
    start: int
    size: int
    kind: str


@dataclass
class EditResult:
    """images, reconstructions: (N, 3, H, W) edited and unedited decodes; codes: (N, D) edited codes;
    scores_before / scores_after: (N, A) scorer probabilities of reconstructions / edited images, or None."""

    images: torch.Tensor
    reconstructions: torch.Tensor
    codes: torch.Tensor
    scores_before: torch.Tensor | None = None
    scores_after: torch.Tensor | None = None


def latent_slots(model: LatentModel) -> dict[str, Slot]:
    """The model's settable latent entries by name (see the module docstring); empty for an AE or VAE."""
    slots: dict[str, Slot] = {}
    start = 0
    for part in model.latent_parts:
        names = model.entry_names(part)
        if names:
            slots.update({name: Slot(name, start + i, 1, "value") for i, name in enumerate(names)})
        elif part.kind in ("condition", "categorical"):
            slots[part.name] = Slot(part.name, start, part.size, "class")
        elif part.kind == "uniform":
            slots.update({f"{part.name}/{i}": Slot(f"{part.name}/{i}", start + i, 1, "value")
                          for i in range(part.size)})
        start += part.size
    return slots


def _check_strength(name: str, strength: float, slot: Slot | None) -> None:
    if not math.isfinite(strength):
        raise ValueError(f"edit {name!r}: strength must be finite, got {strength}")
    if slot is not None and slot.kind == "class":
        if strength != int(strength) or not 0 <= strength < slot.size:
            raise ValueError(f"edit {name!r}: a class index in 0..{slot.size - 1} is needed, got {strength}")
    elif abs(strength) > MAX_STRENGTH:
        raise ValueError(f"edit {name!r}: |strength| must be <= {MAX_STRENGTH:g}, got {strength}")


def pushed(target: int, push: float) -> float:
    """The value a condition entry is set to for ``target`` 0 or 1, ``push`` past it: 1 + push, or -push."""
    return target + push * (2 * target - 1)


def _direction_step(edits: Mapping[str, float], keep: Sequence[str], method: str,
                    directions: Directions) -> torch.Tensor:
    """The code offset (D,) of the direction edits ``edits``."""
    if method != "conditional" and directions.method != method:
        raise ValueError(f"method {method!r} but the directions were fitted with {directions.method!r}; "
                         f"pass method={directions.method!r} or 'conditional'")
    step = torch.zeros(directions.vectors.shape[1])
    for name, strength in edits.items():
        if method == "conditional":
            unit = directions.conditional(name, keep)
            step += strength * directions.scale_along(unit) * unit
        else:
            index = directions.index(name)
            step += strength * directions.scales[index] * directions.vectors[index]
    return step


def check_edits(model: LatentModel, edits: Mapping[str, float], keep: Sequence[str] = (),
                method: str = "mean_diff", directions: Directions | None = None) -> None:
    """Validate an edit request before any compute; errors are ValueErrors naming the culprit."""
    if method not in EDIT_METHODS:
        raise ValueError(f"unknown edit method {method!r} (known: {', '.join(EDIT_METHODS)})")
    if keep and method != "conditional":
        raise ValueError("keep=[...] only applies to method='conditional'")
    if keep and directions is None:
        raise ValueError("keep=[...] needs the directions of the kept attributes: directions=fit_directions(...)")
    for name in keep:
        directions.index(name)  # an unknown kept attribute fails with the known list
    slots = latent_slots(model)
    known = [*slots, *(n for n in (directions.names if directions else ()) if n not in slots)]
    for name, strength in edits.items():
        if name not in known:
            hint = "" if directions else "; attribute directions need directions=fit_directions(...)"
            raise ValueError(f"unknown attribute {name!r} (known: {', '.join(known) or 'none'}{hint})")
        _check_strength(name, float(strength), slots.get(name))


def edit_codes(model: LatentModel, codes: torch.Tensor, edits: Mapping[str, float], keep: Sequence[str] = (),
               method: str = "mean_diff", directions: Directions | None = None,
               conditions: ConditionTable | None = None) -> torch.Tensor:
    """The edited copy of codes (N, D): direction steps added, then latent slots set (see module docstring).
    With ``conditions`` (the conditions training faces have, over named slots), setting any of those slots
    also moves the slots it rules on (another hair colour, say) to a combination faces have
    (:mod:`facegen.latent.conditions`).

    Pure latent arithmetic, so a service can encode and decode elsewhere (the Serve deployments).
    """
    check_edits(model, edits, keep, method, directions)
    slots = latent_slots(model)
    direction_edits = {n: float(s) for n, s in edits.items() if n not in slots}
    edited = codes.clone()
    if direction_edits:
        step = _direction_step(direction_edits, keep, method, directions)
        if step.shape[0] != codes.shape[1]:
            raise ValueError(f"the directions are {step.shape[0]}-dimensional but the model's codes have "
                             f"{codes.shape[1]} dimensions: were they fitted on another model?")
        edited += step.to(codes)
    for name, strength in edits.items():
        slot = slots.get(name)
        if slot is not None and slot.kind == "value":
            edited[:, slot.start] = float(strength)
        elif slot is not None:
            edited[:, slot.start:slot.start + slot.size] = 0.0
            edited[:, slot.start + int(strength)] = 1.0
    fixed = {n: float(s) for n, s in edits.items() if conditions is not None and n in conditions.names}
    if fixed:
        columns = [slots[n].start for n in conditions.names]
        edited[:, columns] = conditions.nearest(codes[:, columns], fixed)
    return edited


def residual_images(originals: torch.Tensor, reconstructions: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """An edit composed in pixels: the original's own pixels plus what the edit changed in the decoder's output,
    ``x + decode(z') - decode(z)``, clamped to [-1, 1]; all (N, 3, H, W). Where the edit changes nothing the
    face is the original exactly, so an edit carries none of the decoder's blur and none of its errors of
    identity; what the decoder draws differently (the glasses, the smile) comes from the decoder."""
    return (originals + (decoded - reconstructions)).clamp(-1, 1)  # the change first: exact where it is 0


def residual_decoder(decode, originals: torch.Tensor, reconstructions: torch.Tensor):
    """``decode`` composed with :func:`residual_images` for these originals (N, 3, H, W): a decoder whose
    output is what a residual edit shows, so guidance steers the picture the user gets (differentiable in the
    codes)."""
    return lambda codes: residual_images(originals, reconstructions, decode(codes))


def edit(model: LatentModel, images: torch.Tensor, edits: Mapping[str, float], keep: Sequence[str] = (),
         method: str = "mean_diff", directions: Directions | None = None, scorer: AttributeScorer | None = None,
         cond: torch.Tensor | None = None, batch_size: int = 256) -> EditResult:
    """Apply ``edits`` ({attribute: strength}) to images (N, 3, H, W) in [-1, 1].

    keep: attributes whose directions are held fixed (``method="conditional"`` only).
    method: ``mean_diff`` / ``boundary`` (must match how ``directions`` were fitted) or ``conditional``.
    cond: (N, C) condition for families whose encoder needs one (a CVAE).
    Every name and strength is checked before any compute; errors are ValueErrors naming the culprit.
    """
    check_edits(model, edits, keep, method, directions)
    codes = batched(model.encode, images, batch_size, cond)
    edited = edit_codes(model, codes, edits, keep, method, directions)
    result = EditResult(images=batched(model.decode, edited, batch_size),
                        reconstructions=batched(model.decode, codes, batch_size), codes=edited)
    if scorer is not None:
        result.scores_before = batched(scorer.predict_proba, result.reconstructions, batch_size)
        result.scores_after = batched(scorer.predict_proba, result.images, batch_size)
    return result
