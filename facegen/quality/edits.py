"""Editing scored against ground truth: the synthetic renderer's counterfactuals (``facegen synth
--counterfactuals``, :mod:`facegen.data.counterfactual`) give, for a test face, the same face with one attribute
flipped to ``target_value``.

For each pair the original is encoded and edited toward ``target_value`` by every lever the model has for the
attribute, then decoded:

* ``slot``: the model's own latent slot (:func:`facegen.latent.edit.latent_slots`, a CVAE's condition entry)
  set to ``target_value``, or pushed ``slot_push`` past it (1 + push toward 1, -push toward 0: a decoder fed
  values beyond those it trained on exaggerates the attribute, as AttGAN's intensity control does); with a
  :class:`~facegen.latent.conditions.ConditionTable` of the training labels, the slots it rules on move with
  it to a combination training faces have (blond hair turns black hair off);
* otherwise ``mean_diff`` and ``boundary`` directions (the bundle's stored ones, else fitted on its training
  shards as :func:`facegen.latent.store.fit_bundle_directions` fits them, :func:`fit_for`), strength
  ``+EDIT_STEP`` toward 1 and ``-EDIT_STEP`` toward 0, in standard deviations of the training codes along
  the direction (the unit of :func:`facegen.latent.edit.edit_codes`). A fixed step keeps methods and models
  comparable; it is not tuned per attribute, so a model whose classes lie further apart than 2 std flips less;
* ``guided`` (with ``facegen evaluate --guide``): :func:`facegen.latent.guided.guided_codes`, gradient steps
  on each face's code until a guidance classifier (never the judge) reads ``target_value``, holding its reading
  of the other attributes; at most ``Guidance.steps * Guidance.lr`` standard deviations per face;
* ``<method>+residual`` (``facegen evaluate --residual``): the same lever composed in pixels
  (:func:`facegen.latent.edit.residual_images`): the original plus what the edit changed in the decode, so the
  face keeps its own pixels wherever the edit does not reach. Its drift is read against the original (the
  unedited picture it shows); a residual guided edit steers the composed picture itself;
* ``counterfactual`` (always, first): the renderer's counterfactual itself as the edit, read against the
  original. Its flip rate and drift are what a perfect editor scores with this judge: the judge's own misreadings
  cap every method.

:func:`score_edits` then reports, by the judge: flip rate (edits read as ``target_value``, among faces whose
label differs from it: all of them here), drift of the other judged attributes (reconstruction vs edit, so
reconstruction error is not counted as drift; only the attributes the counterfactual leaves alone: a face made
blond stops being black-haired by the renderer's own rule, ``drift_all`` counts those too), and by pixels:
fidelity (PSNR/SSIM of the edit vs the counterfactual), next to the reconstruction's PSNR/SSIM vs the original
(the model's blur, which also caps fidelity) and the unedited reconstruction vs the counterfactual (what
doing nothing scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.latent.conditions import ConditionTable
from facegen.latent.directions import Directions, fit_directions
from facegen.latent.edit import edit_codes, latent_slots, pushed, residual_decoder, residual_images
from facegen.latent.guided import Guidance, Guide, guided_codes
from facegen.latent.scoring import batched
from facegen.latent.store import encode_batch, stored_directions
from facegen.models.base import LatentModel
from facegen.quality.editing import counterfactual_fidelity, drift_of_others, drift_per_attribute, flip_rate
from facegen.quality.judge import BATCH
from facegen.quality.metrics import psnr, ssim
from facegen.quality.pairs import PairSet
from facegen.quality.sections import judge_reading

EDIT_STEP = 2.0  # direction edits: this many standard deviations of the training codes, signed by the target
DIRECTION_METHODS = ("mean_diff", "boundary")
RESIDUAL = "+residual"  # method-name suffix of a lever composed in pixels
CEILING = "counterfactual"  # the renderer's own edit as a method: the judge's ceiling


def baseline(originals: torch.Tensor, reconstructions: torch.Tensor, counterfactuals: torch.Tensor) -> dict:
    """What every method of one attribute is compared with: the reconstruction vs the counterfactual (doing
    nothing) and vs the original (the model's blur)."""
    return {"unedited_psnr": psnr(reconstructions, counterfactuals),
            "unedited_ssim": ssim(reconstructions, counterfactuals),
            "recon_psnr": psnr(reconstructions, originals), "recon_ssim": ssim(reconstructions, originals)}


@torch.no_grad()
def score_edits(judge, names: Sequence[str], attribute: str, originals: torch.Tensor, reconstructions: torch.Tensor,
                edited: torch.Tensor, counterfactuals: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                before: torch.Tensor | None = None, reference: dict | None = None,
                held: torch.Tensor | None = None) -> dict[str, Any]:
    """Edit metrics of one attribute (see the module docstring). ``names``: the judged attributes (``attribute``
    among them), ``labels`` (N, len(names)) the originals' ground truth, ``targets`` (N,) the asked values.
    ``before`` (the judge on the reconstructions) and ``reference`` (:func:`baseline`) may be passed in when
    several methods share them. ``held`` (N, len(names)) bool: the labels the true edit leaves alone (the
    counterfactual's equal to the original's); ``drift`` counts only those, ``drift_all`` every other label."""
    column = list(names).index(attribute)
    before = judge_reading(judge, reconstructions, names) if before is None else before
    after = judge_reading(judge, edited, names)
    flips, counts = [], []
    for value in (0, 1):
        rows = targets == value
        eligible = int((labels[rows, column].round() != value).sum()) if rows.any() else 0
        if eligible:
            flips.append(flip_rate(after[rows], labels[rows], column, value))
            counts.append(eligible)
    fidelity = counterfactual_fidelity(edited, counterfactuals)
    drift = drift_per_attribute(before, after, column, held=held)
    return {"n": int(edited.shape[0]),
            "flip_rate": float(np.average(flips, weights=counts)) if counts else float("nan"),
            "drift": drift_of_others(before, after, column, held=held),
            "drift_all": drift_of_others(before, after, column),
            "drift_per_attribute": {n: float(d) for n, d in zip(names, drift) if n != attribute},
            "fidelity_psnr": fidelity["psnr"], "fidelity_ssim": fidelity["ssim"],
            **(baseline(originals, reconstructions, counterfactuals) if reference is None else reference)}


def fit_for(model: LatentModel, batch: dict[str, torch.Tensor], label_names: Sequence[str],
            wanted: Sequence[str]) -> dict[str, Directions]:
    """:func:`facegen.latent.store.fit_bundle_directions` restricted to the ``wanted`` attributes (those that
    vary in ``batch``): the same codes and fits, without fitting attributes nobody edits."""
    varying = [a for a in wanted if batch["attrs"][:, list(label_names).index(a)].unique().numel() > 1]
    if not varying:
        return {}
    codes = encode_batch(model, batch)
    labels = batch["attrs"][:, [list(label_names).index(a) for a in varying]].round().long()
    return {method: fit_directions(codes, labels, varying, method=method) for method in DIRECTION_METHODS}


@dataclass
class Guided:
    """What a guided edit needs beside the model: the guide and the codes' spread per dimension (D,)."""

    guide: Guide
    scale: torch.Tensor
    guidance: Guidance = Guidance()


@dataclass
class Residual:
    """A lever (a :class:`Directions`, a :class:`Guided` or None for a slot) whose edit is composed in pixels
    (:func:`facegen.latent.edit.residual_images`)."""

    lever: Any


@dataclass(frozen=True)
class SlotLever:
    """A slot edit's lever: the condition table its edits land on (or None) and how far past 0/1 the edited
    entry is set."""

    table: ConditionTable | None = None
    push: float = 0.0


class Levers:
    """The edit levers of one bundle: its slots, directions stored in it or fitted on demand by ``fit``
    (a callable ``() -> {method: Directions}``, called at most once), guidance when ``guided`` is given
    (a callable ``() -> Guided``, called at most once), and each of them composed in pixels too when
    ``residual``. ``conditions``: a callable ``() -> ConditionTable`` of the training labels over the
    model's named condition slots (called at most once), which slot edits then land on; ``slot_push``: how
    far past the target value a slot edit sets its entry."""

    def __init__(self, model: LatentModel, extras: dict, fit, guided=None, residual: bool = False,
                 conditions=None, slot_push: float = 0.0) -> None:
        self.residual, self.slot_push = residual, slot_push
        self._conditions, self._table = conditions, None
        self.model, self.extras, self._fit, self._fitted = model, extras, fit, None
        self._guided, self._guided_made = guided, None
        self.slots = {n: s for n, s in latent_slots(model).items() if s.kind == "value"}
        self.sources: dict[str, str] = {}

    def guided(self) -> Guided | None:
        if self._guided is not None and self._guided_made is None:
            self._guided_made = self._guided()
        return self._guided_made

    def table(self) -> ConditionTable | None:
        if self._conditions is not None and self._table is None:
            self._table = self._conditions()
        return self._table

    def methods(self, attribute: str) -> list[tuple[str, Any]]:
        """``[(method, lever)]`` that can edit ``attribute`` (slot first; it wins over directions), then the same
        levers as :class:`Residual` when ``residual``."""
        found = self._decoded(attribute)
        return found + ([(m + RESIDUAL, Residual(lever)) for m, lever in found] if self.residual else [])

    def _decoded(self, attribute: str) -> list[tuple[str, Any]]:
        if attribute in self.slots:
            return [("slot", SlotLever(self.table(), self.slot_push))]
        found = []
        for method in DIRECTION_METHODS:
            directions = stored_directions(self.extras, method)
            source = "stored in the bundle"
            if directions is None or attribute not in directions.names:
                if self._fitted is None:
                    self._fitted = self._fit()
                directions, source = self._fitted.get(method), "fitted on training shards"
            if directions is not None and attribute in directions.names:
                found.append((method, directions))
                self.sources[method] = source
        guided = self.guided()
        if guided is not None and attribute in guided.guide.attribute_names:
            found.append(("guided", guided))
            self.sources["guided"] = f"guide {guided.guide.location}"
        return found


@torch.no_grad()
def edit_pairs(model: LatentModel, codes: torch.Tensor, targets: torch.Tensor, attribute: str, method: str,
               directions, originals: torch.Tensor | None = None, recon: torch.Tensor | None = None) -> torch.Tensor:
    """Edited codes: each row moved toward its ``targets`` value (see the module docstring); ``directions`` is
    a :class:`SlotLever` for a slot, a :class:`Guided` for guided edits, which steer
    ``residual_images(originals, recon, decode(z))`` when the originals (N, 3, H, W) and their reconstructions
    are given."""
    if isinstance(directions, Guided):
        def decoder(i: int):
            if originals is None:
                return model.decode
            return residual_decoder(model.decode, originals[i:i + BATCH], recon[i:i + BATCH])

        return torch.cat([guided_codes(decoder(i), directions.guide, codes[i:i + BATCH], attribute,
                                       targets[i:i + BATCH], directions.scale, guidance=directions.guidance)
                          for i in range(0, codes.shape[0], BATCH)])
    if method == "slot":
        return _slot_edit(model, codes, targets, attribute, directions)
    edited = codes.clone()
    for value in (0, 1):
        rows = targets == value
        if rows.any():
            strength = EDIT_STEP if value else -EDIT_STEP
            edited[rows] = edit_codes(model, codes[rows], {attribute: strength}, method=method,
                                      directions=directions)
    return edited


def _slot_edit(model: LatentModel, codes: torch.Tensor, targets: torch.Tensor, attribute: str,
               lever: SlotLever) -> torch.Tensor:
    """Codes with the slot ``attribute`` set to each row's target, pushed by ``lever.push`` (and, given its
    table, the slots it rules on moved to a combination training faces have)."""
    edited = codes.clone()
    for target in (0, 1):
        rows = targets == target
        if rows.any():
            edited[rows] = edit_codes(model, codes[rows], {attribute: pushed(target, lever.push)},
                                      conditions=lever.table)
    return edited


def read_attributes(reader, images: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """attrs (N, 40) with every attribute ``reader`` (a :class:`~facegen.latent.guided.Guide`) knows replaced by
    its reading of images (N, 3, H, W), probability >= 0.5: a condition as the service gets it."""
    read = attrs.clone()
    probs = torch.sigmoid(batched(reader.logits, images, BATCH))
    for i, name in enumerate(reader.attribute_names):
        if name in CELEBA_ATTRIBUTES:
            read[:, CELEBA_ATTRIBUTES.index(name)] = (probs[:, i] >= 0.5).to(read)
    return read


@torch.no_grad()
def editing(model: LatentModel, judge, levers: Levers, pairs: PairSet, names: Sequence[str], reader=None
            ) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor] | None]:
    """One row per method that can edit ``pairs.attribute`` (with ``score_edits``' metrics), after a first row
    ``counterfactual`` (the renderer's edit itself, read against the original: the ceiling this judge allows),
    and images for a grid of the first method (originals, counterfactuals, reconstructions, edits), or None.
    reader: a classifier whose readings of the originals are a conditional encoder's condition (default: the
    true labels)."""
    attribute = pairs.attribute
    cond_attrs = pairs.attrs_original if reader is None else read_attributes(reader, pairs.originals,
                                                                             pairs.attrs_original)
    batch = {"image": pairs.originals, "attrs": cond_attrs,
             "label": torch.full((pairs.originals.shape[0],), -1, dtype=torch.int64)}
    codes = batched(model.encode, pairs.originals, BATCH, model.condition_of(batch))
    recon = batched(model.decode, codes, BATCH)
    labels = pairs.attrs_original[:, [CELEBA_ATTRIBUTES.index(n) for n in names]]
    reference = baseline(pairs.originals, recon, pairs.counterfactuals)
    before = {False: judge_reading(judge, recon, names), True: judge_reading(judge, pairs.originals, names)}
    # The renderer's own edit, judged like the others: what a perfect editor scores with this judge (its
    # misreadings of a true edit cap every method's flip rate and floor their drift)
    rows = [{"attribute": attribute, "method": CEILING, "step": None,
             **score_edits(judge, names, attribute, pairs.originals, recon, pairs.counterfactuals,
                           pairs.counterfactuals, labels, pairs.targets, before[True], reference, pairs.held(names))}]
    grid = None
    for method, lever in levers.methods(attribute):
        residual = isinstance(lever, Residual)
        lever, base = (lever.lever, method.removesuffix(RESIDUAL)) if residual else (lever, method)
        edited = batched(model.decode, edit_pairs(model, codes, pairs.targets, attribute, base, lever,
                                                  *((pairs.originals, recon) if residual else ())), BATCH)
        if residual:  # the unedited picture is the original itself, so drift is read against it
            edited = residual_images(pairs.originals, recon, edited)
        scores = score_edits(judge, names, attribute, pairs.originals, recon, edited, pairs.counterfactuals, labels,
                             pairs.targets, before[residual], reference, pairs.held(names))
        step = EDIT_STEP if base in DIRECTION_METHODS else lever.push if isinstance(lever, SlotLever) else None
        rows.append({"attribute": attribute, "method": method, "step": step, **scores})
        if grid is None:
            grid = {"original": pairs.originals[:8], "counterfactual": pairs.counterfactuals[:8],
                    "reconstruction": recon[:8], "edit": edited[:8]}
    return rows, grid
