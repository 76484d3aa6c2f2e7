"""The sections of a latent analysis, one function each: (context) -> :class:`~facegen.reporting.page.Part`.

:mod:`facegen.analysis.run` builds the :class:`Context` (model, codes, data, judges) and calls them in order.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from facegen.analysis import figures
from facegen.analysis.data import AnalysisData
from facegen.latent.conditions import ConditionTable
from facegen.latent.directions import METHODS, Directions, fit_directions
from facegen.latent.disentanglement import dci, mig_per_factor, sap
from facegen.latent.edit import latent_slots
from facegen.latent.grids import image_grid, save_png
from facegen.latent.naming import name_dimensions, naming_figure, naming_table_markdown
from facegen.latent.sampler import CodeSampler, sample_faces
from facegen.latent.scoring import AttributeScorer
from facegen.models.base import LatentModel
from facegen.reporting.page import Part

@dataclass
class Context:
    """Everything the sections share. codes_*: (N, D) codes of the data's splits (encoded with their
    condition); cond_test: the held-out condition (a CVAE) or None; scorer: the classifier (restricted to the
    labelled attributes) or None; sampler: the AE's fitted density of its codes; settings/setting_scores: an
    InfoGAN's code levers and the scorer's mean P(attribute) under each, (S, A); conditions: the conditions the
    training faces have (a CVAE on attributes), which its slot edits land on."""

    model: LatentModel
    family: str
    data: AnalysisData
    codes_train: torch.Tensor
    codes_test: torch.Tensor
    cond_test: torch.Tensor | None
    out: str
    say: Callable[[str], None]
    scorer: AttributeScorer | None = None
    sampler: CodeSampler | None = None
    settings: list = field(default_factory=list)
    setting_scores: np.ndarray | None = None
    directions: dict[str, Directions] = field(default_factory=dict)
    conditions: ConditionTable | None = None

    def png(self, name: str) -> str:
        return os.path.join(self.out, f"{name}.png")


def traversals(ctx: Context, n_sources: int = 3, rows: int = 8, steps: int = 7) -> Part:
    """Sweeps of each source's code, per dimension (VAE, CVAE), principal component (AE) or code (InfoGAN)."""
    model, codes, part = ctx.model, ctx.codes_train, Part("traversals", "Traversals")
    described = ""
    for i, z in enumerate(ctx.codes_test[:n_sources]):
        if ctx.sampler is not None:  # no prior to sweep: the fitted sampler's principal components
            sweep = figures.component_rows(z, codes, ctx.sampler.components[:rows], steps)
            what = "principal components of the training codes, each from its 2% to its 98% quantile"
        elif model.code_parts():
            sweep = figures.code_rows(model, z, steps)
            what = "continuous codes, each swept over the prior's range [-1, 1]"
        else:
            dims = figures.active_dims(codes, model.part_indices(("gaussian",)), rows)
            sweep = figures.dimension_rows(z, codes, dims, steps)
            what = "the most active latent dimensions (largest variance of the codes), each 2% to 98% quantile"
        if sweep.labels:
            part.pictures[f"source {i + 1}"] = figures.sweep_picture(model, sweep, ctx.png(f"traversal_{i + 1}"))
            described = f"Rows, top to bottom: {', '.join(sweep.labels)} ({what}); other entries unchanged.\n"
            part.data.setdefault("rows", sweep.labels)
    if any(part.kind == "categorical" for part in model.code_parts()):
        per_source = [figures.class_rows(model, z) for z in ctx.codes_test[:n_sources]]
        for c, first in enumerate(per_source[0] if per_source else []):
            stacked = figures.SweepRows(first.labels, torch.cat([rows_[c].codes for rows_ in per_source]))
            name = first.labels[0]
            part.pictures[f"categorical {name}: one row per source, one column per class"] = \
                figures.sweep_picture(model, stacked, ctx.png(f"traversal_{name}"))
    if model.condition_part() is not None:
        grid = model.decode_all_conditions(ctx.codes_test[:6])  # (6, K, 3, H, W)
        part.pictures[f"every condition (columns: {model.conditions_caption()})"] = \
            figures.grids.save_png(figures.grids.image_grid(grid.flatten(0, 1), nrow=grid.shape[1]),
                                   ctx.png("conditions"))
    part.markdown = described + f"Sources: the first {n_sources} held-out images."
    return part


def naming(ctx: Context, k: int = 10, steps: int = 7, n_sources: int = 6) -> Part:
    """Name dimensions (VAE / CVAE), principal components (AE) or codes (InfoGAN) with the classifier."""
    part = Part("naming", "Named dimensions")
    if ctx.scorer is None:
        part.markdown = ("Skipped: no `--classifier` was given. Naming decodes traversals and scores them with "
                         "an attribute classifier; pass a `classifier` bundle to name dimensions.")
        part.data["skipped"] = "no classifier"
        return part
    model, codes = ctx.model, ctx.codes_train
    if ctx.sampler is not None:
        rows = name_dimensions(model, codes, ctx.scorer, basis=ctx.sampler.components[:k], steps=steps,
                               n_sources=n_sources)
        for row in rows:
            row.label = f"PC{row.dim + 1}"
    else:
        coded = bool(model.code_parts())
        kinds = ("uniform",) if coded else ("gaussian",)
        dims = figures.active_dims(codes, model.part_indices(kinds), k)
        rows = name_dimensions(model, codes, ctx.scorer, dims=dims, steps=steps, n_sources=n_sources) if dims else []
        slot_names = {slot.start: name for name, slot in latent_slots(model).items() if slot.kind == "value"}
        for row in rows:
            row.label = slot_names.get(row.dim, row.label) if coded else row.label
    if rows:
        part.markdown = ("Each row: the attribute whose classifier probability changes most when the dimension "
                         "is swept (2% to 98% quantile), the signed change (effect) and its Spearman "
                         "monotonicity.\n\n" + naming_table_markdown(rows))
        part.pictures["effect of each dimension on each attribute"] = naming_figure(rows, ctx.png("naming"))
    if ctx.setting_scores is not None:
        table = figures.class_effects_markdown(ctx.settings, ctx.setting_scores, ctx.scorer.attribute_names)
        if table:
            part.markdown += ("\n\nCategorical code classes: the attribute each class raises (lowers) most "
                              "relative to the mean over classes.\n\n" + table)
    part.data["dimensions"] = [vars(row) for row in rows]
    return part


def correlated_attributes(labels: torch.Tensor, names: list[str], target: str, count: int = 2) -> list[str]:
    """The ``count`` attributes whose labels correlate most (|Pearson r|) with the target's."""
    corr = np.nan_to_num(np.corrcoef(labels.numpy().T))
    column = names.index(target)
    order = np.argsort(-np.abs(corr[column]))
    return [names[i] for i in order if i != column][:count]


def directions(ctx: Context) -> Part:
    """Fit every method's directions on the training codes (stored in the bundle by the caller)."""
    part = Part("directions", "Attribute directions")
    labels, names = ctx.data.train.labels, ctx.data.label_names
    if labels is None:
        part.markdown = f"Skipped: directions need binary labels and {ctx.data.label_source}."
        part.data["skipped"] = ctx.data.label_source
        return part
    ctx.directions = {m: fit_directions(ctx.codes_train, labels, names, method=m) for m in METHODS}
    mean_diff, boundary = ctx.directions["mean_diff"], ctx.directions["boundary"]
    cosine = (mean_diff.vectors * boundary.vectors).sum(1)
    rows = ["| attribute | positives | cos(mean_diff, boundary) | most correlated |", "|---|---:|---:|---|"]
    table = {}
    for i, name in enumerate(names):
        keep = correlated_attributes(labels, names, name)
        table[name] = {"positives": int(labels[:, i].sum()), "cosine": float(cosine[i]), "correlated": keep}
        rows.append(f"| {name} | {table[name]['positives']} | {cosine[i]:+.2f} | {', '.join(keep)} |")
    part.data.update({"attributes": table, "labels": ctx.data.label_source, "n_train": len(ctx.data.train)})
    part.markdown = (f"`mean_diff` and `boundary` directions fitted on {len(ctx.data.train)} training codes, labels "
                     f"from {ctx.data.label_source}; stored in the bundle under `directions/mean_diff` and "
                     "`directions/boundary`, where the edit service and augmentation find them.\n\n"
                     + "\n".join(rows) + "\n")
    return part


def disentanglement(ctx: Context) -> Part:
    """MIG, DCI and SAP of the training codes against the ground-truth factors."""
    part = Part("disentanglement", "Disentanglement against ground-truth factors")
    data = ctx.data
    if not data.factor_names:
        part.markdown = "Skipped: no ground-truth factors (no factors.parquet found and no class labels)."
        part.data["skipped"] = "no factors"
        return part
    dims = [i for i in range(ctx.codes_train.shape[1]) if i not in ctx.model.part_indices(("condition",))]
    known = ~np.isnan(data.train.factors).any(1)
    codes, factors = ctx.codes_train[known][:, dims].numpy(), data.train.factors[known]
    with warnings.catch_warnings():  # sklearn warns about classes missing from small held-out splits
        warnings.simplefilter("ignore", UserWarning)
        return _disentanglement_part(part, ctx, dims, known, codes, factors)


def _disentanglement_part(part: Part, ctx: Context, dims: list[int], known: np.ndarray, codes: np.ndarray,
                          factors: np.ndarray) -> Part:
    """The metrics and their tables (see :func:`disentanglement`)."""

    data, scores, skipped, gaps = ctx.data, {}, {}, {}
    try:
        gaps = dict(zip(data.factor_names, mig_per_factor(codes, factors, data.factor_discrete).tolist()))
        scores["mig"] = float(np.mean(list(gaps.values())))
    except ValueError as exc:
        skipped["mig"] = str(exc)
    try:
        scores["sap"] = sap(codes, factors, data.factor_discrete)
    except ValueError as exc:
        skipped["sap"] = str(exc)
    try:
        result = dci(codes, factors, data.factor_discrete)
        scores.update({"dci_disentanglement": result.disentanglement, "dci_completeness": result.completeness,
                       "dci_informativeness": result.informativeness})
        share = result.importance / np.maximum(result.importance.sum(0, keepdims=True), 1e-12)
        top = {f: {"dim": dims[int(share[:, k].argmax())], "share": float(share[:, k].max())}
               for k, f in enumerate(data.factor_names)}
    except ValueError as exc:
        skipped["dci"], top = str(exc), {}
    part.data.update({"scores": scores, "skipped": skipped, "factors": data.factor_names, "n": int(known.sum()),
                      "source": data.factor_source, "top_dimension": top, "mig_per_factor": gaps})
    lines = [f"Codes of {int(known.sum())} training images"
             + (" (the CVAE's given condition left out)" if len(dims) < ctx.codes_train.shape[1] else "")
             + f" against {len(data.factor_names)} factors from {data.factor_source}: "
             + ", ".join(data.factor_names) + ".", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in scores.items()]
    lines += [f"| {k} | skipped: {v} |" for k, v in skipped.items()]
    if top:
        lines += ["", "Per factor, the code dimension with the largest share of its DCI importance, and the "
                  "factor's MIG gap:", "", "| factor | dimension | share | MIG gap |", "|---|---:|---:|---:|"]
        lines += [f"| {f} | z[{t['dim']}] | {t['share']:.2f} | {gaps.get(f, float('nan')):.3f} |"
                  for f, t in top.items()]
    part.markdown = "\n".join(lines) + "\n"
    return part


def maps(ctx: Context, tsne_points: int = 400, seed: int = 0) -> Part:
    """PCA and t-SNE maps of the training codes, coloured by a few labels."""
    part = Part("maps", "Latent maps")
    data, codes = ctx.data, ctx.codes_train
    colors: dict[str, tuple[np.ndarray, tuple[str, ...] | None]] = {}
    labels_of = data.manifest.label_names
    if (data.train.batch["label"] >= 0).any():
        colors["label"] = (data.train.batch["label"].numpy(), tuple(labels_of.get("label", ())) or None)
    for head in ("race", "gender"):
        if head in data.train.groups and len(colors) < 3 and not (head == "gender" and "Male" in data.label_names):
            colors[head] = (data.train.groups[head], data.group_names.get(head))
    preferred = [a for a in ("Male", "Smiling", "Eyeglasses") if a in data.label_names] + data.label_names
    for name in dict.fromkeys(preferred):
        if len(colors) >= 3:
            break
        colors[name] = (data.train.labels[:, data.label_names.index(name)].long().numpy(), ("no", "yes"))
    pick = np.random.default_rng(seed).permutation(len(codes))[:tsne_points]
    part.pictures["PCA"] = figures.map_panels(codes, colors, ctx.png("map_pca"), "pca", seed)
    ctx.say(f"t-SNE of {len(pick)} codes")
    part.pictures["t-SNE"] = figures.map_panels(codes[pick], {k: (v[pick], c) for k, (v, c) in colors.items()},
                                                ctx.png("map_tsne"), "tsne", seed)
    part.markdown = (f"Training codes: PCA of all {len(codes)}, t-SNE of a random {len(pick)}, coloured by "
                     f"{', '.join(colors) or 'nothing (no labels)'}.")
    part.data["colors"] = list(colors)
    return part


def sampler_part(ctx: Context, n: int = 64) -> Part:
    """The AE's ex-post density of its codes: what it kept and what it draws."""
    s = ctx.sampler
    part = Part("sampler", "Samples from the codes' density")
    part.pictures["samples"] = save_png(image_grid(sample_faces(ctx.model, s, n), nrow=8), ctx.png("samples"))
    part.data = {"n_components": s.n_components, "explained": s.explained, "sampler": s.describe()}
    part.markdown = (f"Fitted on {len(ctx.codes_train)} training codes: {s.describe()}. "
                     "Stored in the bundle under `sampler/`, so the service draws new faces from it.")
    return part
