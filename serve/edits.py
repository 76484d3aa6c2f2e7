"""One batch of edits through the models: encode, move each code, decode both, score both.

A code moves by latent arithmetic here (direction methods, latent slots) or, for ``guided`` edits, by gradient
steps where the decoder and the guide are (one ``guided`` call for the batch's guided rows).

The same steps run in two places, chosen by the app's ``fused`` argument: in the ingress with each model a
DeploymentHandle call (the split deployments, three hops per batch), or inside ``FusedModels`` with the
models in that process (one hop per batch). Each step's wall time comes back with the rows, so a client can
see where a request's time went (the ingress sends them as a ``Server-Timing`` header).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import torch

from facegen.latent.conditions import ConditionTable
from facegen.latent.edit import check_edits, edit_codes, latent_slots, residual_images
from facegen.latent.guided import GUIDED, check_guided_edits
from facegen.models import LatentModel
from serve.images import png_base64_rows
from serve.requests import ApiError


@dataclass(frozen=True)
class EditSpec:
    """One request's edit: ``edits`` {attribute: strength}, ``keep``, ``method`` and ``directions``, the name
    of the stored directions it uses (None: latent slots only, or a guided edit); ``residual``: show the
    upload's own pixels plus what the edit changed in the decode (:func:`facegen.latent.edit.residual_images`)."""

    edits: dict[str, float]
    keep: list[str]
    method: str
    directions: str | None
    residual: bool = False


@dataclass
class EditRows:
    """A batch of k edits: ``reconstructions`` and ``edited`` (k, 3, R, R), ``scores_before``/``after`` (k, A)
    or None without a classifier (before: of the picture the edit starts from, the reconstruction or, for a
    residual edit, the upload), ``errors`` a message per row that could not be edited (else None), and
    ``timings`` {step: seconds} for the batch."""

    reconstructions: torch.Tensor
    edited: torch.Tensor
    scores_before: torch.Tensor | None
    scores_after: torch.Tensor | None
    errors: list[str | None]
    timings: dict[str, float] = field(default_factory=dict)
    edited_png: list[str] = field(default_factory=list)
    """The pictures as base64 PNGs, once :meth:`encode_pictures` ran."""
    reconstruction_png: list[str] = field(default_factory=list)

    def encode_pictures(self) -> None:
        """Fill ``edited_png`` and ``reconstruction_png``: the batch's PNGs in one go, for a worker thread."""
        self.edited_png, self.reconstruction_png = png_base64_rows(self.edited), png_base64_rows(self.reconstructions)


async def run_edit_rows(images: torch.Tensor, conds: torch.Tensor | None, specs: list[EditSpec],
                        encode: Callable[[torch.Tensor, torch.Tensor | None], Awaitable[torch.Tensor]],
                        decode: Callable[[torch.Tensor], Awaitable[torch.Tensor]],
                        scores: Callable[[torch.Tensor], Awaitable[torch.Tensor]] | None,
                        generator: LatentModel, directions_of: Callable,
                        guided: Callable[[torch.Tensor, list], Awaitable[torch.Tensor]] | None = None,
                        conditions: ConditionTable | None = None) -> EditRows:
    """images (k, 3, R, R) with specs (k) -> :class:`EditRows`. ``encode``/``decode``/``scores`` are the
    models (a handle call or a local call); ``directions_of(name)`` looks up stored directions; ``guided(codes,
    edits, originals, residual)`` steers the rows whose method is ``guided``; ``conditions``: the conditions
    training faces have, which a condition slot's edit lands on."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step], clock = now - clock, now

    k = len(specs)
    codes = await encode(images, conds)
    lap("encode")
    moved: dict[int, torch.Tensor] = {}  # row -> its edited code
    errors: dict[int, str] = {}
    steered = [i for i, spec in enumerate(specs) if spec.method == GUIDED]
    if steered:
        moved = dict(zip(steered, await guided(codes[steered], [specs[i].edits for i in steered], images[steered],
                                               [specs[i].residual for i in steered])))
        lap("guided")
    arithmetic = [i for i in range(len(specs)) if i not in moved]
    for (edit, keep, method, name), rows in _same_edits(specs, arithmetic).items():
        try:  # one call for every row asking the same edit: a batch under load is mostly one edit
            moved.update(zip(rows, edit_codes(generator, codes[rows], dict(edit), list(keep), method,
                                              directions_of(name) if name else None, conditions)))
        except ValueError as exc:  # checked before batching; kept per row so a bad edit fails its rows alone
            moved.update((i, codes[i]) for i in rows)
            errors.update((i, str(exc)) for i in rows)
    lap("edit")
    decoded = await decode(torch.cat([codes, torch.stack([moved[i] for i in range(k)])]))
    lap("decode")
    recon, after = decoded[:k], decoded[k:].clone()
    composed = torch.tensor([spec.residual for spec in specs])
    after[composed] = residual_images(images[composed], recon[composed], after[composed])
    start = torch.where(composed[:, None, None, None], images, recon)  # what each edit is read against
    probabilities = None
    if scores is not None:
        probabilities = await scores(torch.cat([start, after]))
        lap("scores")
    return EditRows(recon, after, None if probabilities is None else probabilities[:k],
                    None if probabilities is None else probabilities[k:], [errors.get(i) for i in range(k)], timings)


def _same_edits(specs: list[EditSpec], rows: list[int]) -> dict[tuple, list[int]]:
    """Rows grouped by the latent arithmetic they ask for: {(edits, keep, method, directions): rows}."""
    groups: dict[tuple, list[int]] = {}
    for i in rows:
        spec = specs[i]
        key = (tuple(spec.edits.items()), tuple(spec.keep), spec.method, spec.directions)
        groups.setdefault(key, []).append(i)
    return groups


def check_edit(catalog, edits: dict[str, float], keep: list[str], method: str) -> None:
    """An edit that cannot run is a 400 naming the problem, before it joins a batch."""
    try:
        if method != GUIDED:
            check_edits(catalog.generator, edits, keep, method, catalog.directions_for(method))
            return
        if not catalog.guided():
            raise ApiError(400, "no_guide", "guided edits need a guide classifier (the app's 'guide' argument, "
                           "`facegen serve --guide BUNDLE`) and a bundle with stored directions; methods here: "
                           f"{', '.join(catalog.methods()) or 'none'}")
        if keep:
            raise ValueError("keep=[...] only applies to method='conditional' (a guided edit holds every attribute "
                             "the guide reads)")
        check_guided_edits(catalog.guide_attributes, edits, list(latent_slots(catalog.generator)))
    except ValueError as exc:
        raise ApiError(400, "bad_edit", str(exc)) from None


async def read_conditions(catalog, scores: Callable | None, images: torch.Tensor) -> torch.Tensor | None:
    """A conditional encoder's conditions (k, C) for k uploads: what the classifier sees in them (one
    ``scores`` call), all-zero when it cannot tell; None for an unconditional model."""
    spec = catalog.condition
    if spec is None:
        return None
    if spec.attributes and scores is not None and spec.readable_by(catalog):
        rows = await scores(images)
        return spec.from_scores(rows, catalog.classifier_attributes)
    return torch.zeros(len(images), spec.size)


async def edit_batch(items: list[tuple[torch.Tensor, EditSpec]], catalog, encode, decode, scores,
                     guided=None) -> list:
    """k (image (3, R, R), spec) -> k (EditRows, row index), or an ApiError for a row that cannot be edited. The
    rows' pictures come back as PNGs too (``EditRows.encode_pictures``, in a worker thread)."""
    images, specs = torch.stack([image for image, _ in items]), [spec for _, spec in items]
    started = time.perf_counter()
    conds = await read_conditions(catalog, scores, images)
    conditioned = time.perf_counter()
    rows = await run_edit_rows(images, conds, specs, encode, decode, scores, catalog.generator,
                               catalog.directions.get, guided, catalog.conditions)
    if conds is not None:
        rows.timings["cond"] = conditioned - started
    encoded = time.perf_counter()
    await asyncio.to_thread(rows.encode_pictures)  # Pillow lets go of the GIL: beside the event loop
    rows.timings["png"] = time.perf_counter() - encoded
    return [(rows, i) if error is None else ApiError(400, "bad_edit", error) for i, error in enumerate(rows.errors)]


def named(scores: torch.Tensor | None, i: int, names: list[str]) -> dict[str, float] | None:
    """Row i of (k, A) probabilities as {attribute: p}, None without a classifier."""
    return None if scores is None else {n: round(float(p), 4) for n, p in zip(names, scores[i].tolist())}


def server_timing(steps: dict[str, float]) -> str:
    """{step: seconds} -> a ``Server-Timing`` header value (ms), which browsers' developer tools show."""
    return ", ".join(f"{step};dur={1000 * seconds:.2f}" for step, seconds in steps.items())
