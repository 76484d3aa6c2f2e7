"""Driver-side checks of an augmentation request, and the attribute directions it will use.

All of it runs before Ray starts: an unknown attribute, a model that cannot edit, a strength out of range or
labels that do not cover the edits cost one line on stderr and nothing else.
"""

from __future__ import annotations

import sys

import torch

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.data.pipeline import read_examples
from facegen.data.shards import read_manifest
from facegen.errors import DatasetError, FacegenError
from facegen.latent.conditions import ConditionTable
from facegen.latent.directions import Directions
from facegen.latent.edit import Slot, edit, latent_slots
from facegen.latent.store import fit_bundle_directions, stored_directions
from facegen.models.base import LatentModel


def check_model(bundle, location: str, layout: str, edits: dict[str, float], labels) -> dict[str, Slot]:
    """Refuse bundles that cannot be edited here and label requests that cannot be met; return the slots."""
    model = bundle.model
    if not isinstance(model, LatentModel):
        raise FacegenError(f"--bundle {location}: a {bundle.config.family} cannot edit images "
                           "(augmentation needs a latent model: ae, vae, cvae, ...)")
    if model.condition_part() is not None and (not model.condition_attributes() or labels is None):
        raise FacegenError(f"--bundle {location}: the {bundle.config.family}'s encoder needs each image's "
                           "attribute labels: pass --labels (only attribute conditions are supported)")
    if layout == "celeba":
        if labels is None:
            raise FacegenError("--layout celeba needs --labels (the sources' list_attr_celeba.txt)")
        for name in edits:
            if name not in labels.names:
                raise FacegenError(f"--layout celeba: edited attribute {name!r} is not in {labels.location}, "
                                   "so its variants could not be labelled")
    return latent_slots(model)


def _stored_method(extras: dict[str, torch.Tensor], method: str) -> str:
    """Which stored set serves ``method``: its own, or for ``conditional`` boundary (else mean_diff)."""
    if method != "conditional":
        return method
    return "boundary" if stored_directions(extras, "boundary") is not None else "mean_diff"


def resolve_directions(bundle, edits: dict[str, float], keep: tuple[str, ...], method: str,
                       slots: dict[str, Slot], fit_rows: int, location: str) -> Directions | None:
    """The directions the edits need: stored in the bundle, else fitted on its training shards (said on
    stderr); None when every edit is a latent slot. An unknown name is refused before any fitting."""
    wanted = [name for name in edits if name not in slots]
    if not wanted and not keep:
        return None
    stored_method = _stored_method(bundle.extras, method)
    found = stored_directions(bundle.extras, stored_method)
    fittable = found.names if found is not None else tuple(bundle.attribute_names)
    for name in [*wanted, *keep]:
        if name not in fittable:
            known = [*slots, *(n for n in fittable if n not in slots)]
            where = (f"a stored {stored_method} direction" if found is not None
                     else "a label of its training data (to fit a direction on)")
            raise FacegenError(f"unknown attribute {name!r} for {location}: not {where} nor a latent slot "
                               f"(known: {', '.join(known) or 'none'})")
    if found is not None:
        return found
    manifest, batch = training_batch(bundle, fit_rows, f"{location} stores no {stored_method} directions and",
                                     "fit them")
    shards = bundle.config.data.shards
    try:
        fitted = fit_bundle_directions(bundle.model, batch, manifest.attribute_names, methods=[stored_method])
    except ValueError as exc:
        raise FacegenError(f"cannot fit directions on {shards}: {exc}") from None
    print(f"augment: {location} stores no {stored_method} directions; fitted them on {batch['image'].shape[0]} "
          f"train rows of {shards} (not stored in the bundle)", file=sys.stderr)
    return fitted[stored_method]


def training_batch(bundle, rows: int, who: str, why: str):
    """(manifest, up to ``rows`` train rows) of the bundle's training shards; FacegenError naming ``who`` and
    ``why`` when they cannot be read."""
    try:
        manifest = read_manifest(bundle.config.data.shards)
    except DatasetError as exc:
        raise FacegenError(f"{who} its training shards cannot be read to {why} ({exc})") from None
    return manifest, read_examples(manifest, "train", rows)


def validate_edits(model, spec, directions: Directions | None) -> None:
    """Run every variant's edit on one blank image: the edit's own checks (names, strengths, keep, method,
    code width) then fail here, in one line, instead of in every actor."""
    size = model.config.resolution
    blank = torch.zeros(1, 3, size, size)
    cond = model.condition_of({"image": blank, "attrs": torch.zeros(1, len(CELEBA_ATTRIBUTES))})
    for k in range(1, spec.variants + 1):
        try:
            edit(model, blank, spec.edits_for(k), keep=spec.keep, method=spec.method, directions=directions,
                 cond=cond)
        except ValueError as exc:
            raise FacegenError(f"--edits (variant {k}: {spec.edits_for(k)}): {exc}") from None


def check_flip(args) -> None:
    """--flip sets its own edits and labels: refuse the options that would contradict it."""
    clashes = [name for name, given in (("--method guided", args.method == "guided"), ("--relabel", args.relabel),
                                        ("--keep", bool(args.keep)), ("--jitter", bool(args.jitter)))
               if given]
    if clashes:
        raise FacegenError(f"--flip labels each variant by its new condition; it does not go with {clashes[0]}")
    if not args.labels:
        raise FacegenError("--flip needs --labels (the sources' list_attr_celeba.txt): a flip starts from the "
                           "source's own label")


def condition_table(bundle, rows: int, location: str) -> ConditionTable:
    """The condition combinations of the model's training faces: stored by ``facegen analyze``, else
    counted on up to ``rows`` of its training shards."""
    named = list(bundle.model.condition_attributes())
    stored = ConditionTable.from_extras(bundle.extras)
    if stored is not None and list(stored.names) == named:
        return stored
    manifest, batch = training_batch(bundle, rows, f"--flip: {location} stores no condition table and",
                                     "count the conditions its faces have")
    missing = [n for n in named if n not in manifest.attribute_names]
    if missing:
        raise FacegenError(f"--flip: the training shards of {location} have no labels {', '.join(missing)}")
    columns = [manifest.attribute_names.index(n) for n in named]
    return ConditionTable.fit(named, batch["attrs"][:, columns])
