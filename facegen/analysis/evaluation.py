"""How well edits work, on held-out faces: flip rate, drift of other attributes, preservation, per group.

For each attribute and each editing method, every image is edited *away from its ground-truth label*
(absent -> present for negatives, present -> absent for positives), so a label decides which way an image
can flip. Per judge (:mod:`facegen.analysis.judges`; the first judge is the primary one):

flip rate     among images the judge puts on the source side before the edit (P < 0.5 for an edit toward
              "present"), the fraction it puts on the other side after (P >= 0.5): the edit crossed 0.5
target gain   mean change of the target's P in the asked direction (over all edited images)
drift         mean |change| of every *other* attribute's P (the labelled attributes the judge knows)
keep drift    the same over the ``keep`` attributes only (those conditional editing holds fixed)

and, judge-free, preservation: pixel MSE between the reconstruction and the edit (both decoded, so the
autoencoder's own error is left out), and latent distance ||z' - z|| in units of the codes' total standard
deviation sqrt(trace Cov z). Groups (FairFace race / gender / age, or whatever the data has) break the
primary judge's flip rate down, pooled over attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from facegen.latent.conditions import ConditionTable
from facegen.latent.directions import Directions
from facegen.latent.edit import MAX_STRENGTH, edit_codes
from facegen.latent.scoring import AttributeScorer, batched
from facegen.models.base import LatentModel


@dataclass(frozen=True)
class EditPlan:
    """One method's edit of one attribute: ``up`` (toward present) and ``down`` (toward absent) are requests
    for :func:`facegen.latent.edit.edit_codes` with ``method``, ``directions`` and ``keep``; ``note`` says
    what they do when it is not obvious (which InfoGAN code was chosen); ``strength``: a direction edit's size in
    standard deviations, for the record; ``conditions``: the training conditions a condition slot's edit lands on."""

    up: Mapping[str, float]
    down: Mapping[str, float]
    method: str = "mean_diff"
    directions: Directions | None = None
    keep: tuple[str, ...] = ()
    note: str = ""
    strength: float | None = None
    conditions: ConditionTable | None = None


def class_gap(directions: Directions, unit: torch.Tensor, codes: torch.Tensor, column: torch.Tensor) -> float:
    """Distance between the two classes' mean codes along ``unit`` (D,), in standard deviations of the codes
    along it: how far a typical negative must move to reach a typical positive."""
    positive = column >= 0.5
    gap = (codes[positive].mean(0) - codes[~positive].mean(0)) @ unit.to(codes)
    return float(gap / directions.scale_along(unit).clamp(min=1e-8))


def direction_plans(directions: Mapping[str, Directions], attributes: Sequence[str], factor: float,
                    keep: Mapping[str, Sequence[str]], codes: torch.Tensor, labels: torch.Tensor,
                    label_names: Sequence[str]) -> dict[str, dict[str, EditPlan]]:
    """``{method: {attribute: EditPlan}}`` for mean_diff, boundary and conditional (the boundary directions
    with each attribute's ``keep`` projected out).

    Edit sizes are calibrated per attribute and method: ``factor`` times the class gap (:func:`class_gap`) on
    the training codes (N, D) and 0/1 labels (N, A), capped at MAX_STRENGTH. A fixed size in standard
    deviations would be unfair between methods: a logistic boundary's normal leans into low-variance
    dimensions, where one standard deviation is a tiny step that barely changes the image.
    """
    plans: dict[str, dict[str, EditPlan]] = {}
    base = directions.get("boundary") or directions.get("mean_diff")
    for method in ("mean_diff", "boundary", "conditional"):
        found = base if method == "conditional" else directions.get(method)
        if found is None:
            continue
        plans[method] = {}
        for a in attributes:
            if a not in found.names:
                continue
            kept = tuple(k for k in keep.get(a, ()) if k in found.names) if method == "conditional" else ()
            try:
                unit = found.conditional(a, kept)
            except ValueError:  # the target lies in the span of the kept attributes: nothing left to edit
                continue
            column = labels[:, list(label_names).index(a)]
            size = min(factor * max(class_gap(found, unit, codes, column), 0.0), MAX_STRENGTH)
            plans[method][a] = EditPlan({a: size}, {a: -size}, method, found, kept, strength=size)
    return plans


def _judge_rows(before: torch.Tensor, after: torch.Tensor, known: list[str], target: str, sign: torch.Tensor,
                others: list[str], keep: Sequence[str]) -> dict[str, np.ndarray]:
    """Per edited image: flippable, flipped, gain, drift and keep drift (NaN where undefined)."""
    col = known.index(target)
    flippable = sign * (before[:, col] - 0.5) < 0
    flipped = sign * (after[:, col] - 0.5) >= 0
    change = (after - before).abs()
    other_cols = [known.index(o) for o in others if o in known and o != target]
    keep_cols = [known.index(k) for k in keep if k in known]
    nan = torch.full((before.shape[0],), float("nan"))
    return {"flippable": flippable.numpy(), "flipped": (flipped & flippable).numpy(),
            "gain": (sign * (after[:, col] - before[:, col])).numpy(),
            "drift": (change[:, other_cols].mean(1) if other_cols else nan).numpy(),
            "keep_drift": (change[:, keep_cols].mean(1) if keep_cols else nan).numpy()}


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def _summary(rows: dict[str, np.ndarray]) -> dict[str, float | int | None]:
    n = int(rows["flippable"].sum())
    return {"flip_rate": float(rows["flipped"].sum() / n) if n else None, "n_flippable": n,
            "target_gain": _mean(rows["gain"]), "drift": _mean(rows["drift"]), "keep_drift": _mean(rows["keep_drift"])}


@torch.no_grad()
def evaluate_edits(model: LatentModel, images: torch.Tensor, labels: torch.Tensor, label_names: Sequence[str],
                   plans: Mapping[str, Mapping[str, EditPlan]], judges: Mapping[str, AttributeScorer],
                   keep: Mapping[str, Sequence[str]] | None = None, groups: Mapping[str, np.ndarray] | None = None,
                   group_names: Mapping[str, Sequence[str]] | None = None, cond: torch.Tensor | None = None,
                   batch_size: int = 64, progress=None) -> dict:
    """Evaluate ``plans`` ({method: {attribute: EditPlan}}) on images (N, 3, H, W) with 0/1 ``labels`` (N, A).

    judges: name -> scorer; the first is primary (groups, headline). keep: attribute -> attributes whose
    drift is reported as ``keep_drift`` for *every* method, so conditional editing compares with the rest.
    groups: head -> (N,) int class per image (-1 unknown), named by ``group_names[head][class]``.
    cond: (N, C) encoder condition (a CVAE). Returns {"methods", "attributes": {attr: {method: cell}},
    "summary": {method: means over attributes}, "groups": {method: {"head=value": {flip_rate, n}}}, "judges"}.
    """
    keep, groups, group_names = keep or {}, groups or {}, group_names or {}
    codes = batched(model.encode, images, batch_size, cond)
    recon = batched(model.decode, codes, batch_size)
    spread = codes.var(0).sum().sqrt().clamp(min=1e-8)
    before = {name: batched(judge.predict_proba, recon, batch_size) for name, judge in judges.items()}
    known = {name: list(judge.attribute_names) for name, judge in judges.items()}
    primary = next(iter(judges), None)
    out = {"methods": list(plans), "judges": list(judges), "attributes": {}, "summary": {}, "groups": {}}
    pooled: dict[str, dict[str, list[np.ndarray]]] = {}
    for method, by_attribute in plans.items():
        for attribute, plan in by_attribute.items():
            if progress:
                progress(f"edit evaluation: {method} {attribute}")
            column = labels[:, list(label_names).index(attribute)]
            up, down = column < 0.5, column >= 0.5
            edited = codes.clone()
            try:
                for rows, request in ((up, plan.up), (down, plan.down)):
                    if rows.any():
                        edited[rows] = edit_codes(model, codes[rows], request, plan.keep, plan.method,
                                                  plan.directions, plan.conditions)
            except ValueError as exc:  # e.g. conditional: the target lies in the span of the kept attributes
                out["attributes"].setdefault(attribute, {})[method] = {"error": str(exc)}
                continue
            after_images = batched(model.decode, edited, batch_size)
            sign = up.float() - down.float()
            cell = {"n_up": int(up.sum()), "n_down": int(down.sum()), "note": plan.note, "strength": plan.strength,
                    "judges": {},
                    "pixel_mse": float((after_images - recon).pow(2).mean()),
                    "latent_distance": float(((edited - codes).norm(dim=1) / spread).mean())}
            for name, judge in judges.items():
                if attribute not in known[name]:
                    continue
                after = batched(judge.predict_proba, after_images, batch_size)
                rows = _judge_rows(before[name], after, known[name], attribute, sign, label_names,
                                   keep.get(attribute, ()))
                cell["judges"][name] = _summary(rows)
                if name == primary:
                    for head, values in groups.items():
                        for value in np.unique(values[values >= 0]):
                            mask = values == value
                            label = f"{head}={_group_label(group_names, head, int(value))}"
                            slot = pooled.setdefault(method, {}).setdefault(label, [])
                            slot.append(np.stack([rows["flippable"][mask], rows["flipped"][mask]]))
            out["attributes"].setdefault(attribute, {})[method] = cell
    for method in plans:
        out["summary"][method] = _method_summary(out["attributes"], method, list(judges))
        out["groups"][method] = {label: _pooled_flips(parts) for label, parts in sorted(pooled.get(method, {}).items())}
    return out


def _method_summary(attributes: dict, method: str, judges: list[str]) -> dict[str, float | None]:
    """Means over attributes of one method's cells (errors and unknown attributes left out)."""
    cells = [c[method] for c in attributes.values() if method in c and "error" not in c[method]]
    summary = {key: _mean(np.array([c[key] for c in cells], dtype=float)) for key in ("pixel_mse", "latent_distance")}
    for name in judges:
        for key in ("flip_rate", "target_gain", "drift", "keep_drift"):
            values = [c["judges"][name][key] for c in cells if name in c["judges"]]
            summary[f"{name}/{key}"] = _mean(np.array([np.nan if v is None else v for v in values], dtype=float))
    return summary


def _pooled_flips(parts: list[np.ndarray]) -> dict[str, float | int | None]:
    """Flip rate over stacked (2, n) [flippable; flipped] masks of several attributes."""
    flippable, flipped = np.concatenate(parts, 1)
    n = int(flippable.sum())
    return {"flip_rate": float(flipped.sum() / n) if n else None, "n": n}


def _group_label(group_names: Mapping[str, Sequence[str]], head: str, value: int) -> str:
    names = group_names.get(head)
    return names[value] if names is not None and 0 <= value < len(names) else str(value)


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def evaluation_markdown(result: dict) -> str:
    """The evaluation as Markdown: a summary per method, the per-attribute table (methods side by side) and
    the primary judge's flip rate per group."""
    methods, judges = result["methods"], result["judges"]
    if not judges:
        return "No judge was available: flip rates and drift need a classifier or labelled data.\n"
    primary = judges[0]
    lines = ["| method | " + " | ".join(f"flip ({j})" for j in judges)
             + " | target gain | drift | keep drift | pixel MSE | latent dist. |",
             "|---|" + "---:|" * (len(judges) + 5)]
    for method in methods:
        s = result["summary"][method]
        lines.append(f"| {method} | " + " | ".join(_fmt(s.get(f"{j}/flip_rate")) for j in judges)
                     + f" | {_fmt(s.get(f'{primary}/target_gain'))} | {_fmt(s.get(f'{primary}/drift'), 3)}"
                     f" | {_fmt(s.get(f'{primary}/keep_drift'), 3)} | {_fmt(s['pixel_mse'], 4)}"
                     f" | {_fmt(s['latent_distance'])} |")
    lines += ["", f"Per attribute, each cell: flip rate by {' / '.join(judges)}, drift ({primary}), pixel MSE; "
              "n: images edited toward present / toward absent.", "",
              "| attribute | n | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for attribute, cells in result["attributes"].items():
        shown = [cells.get(m) for m in methods]
        first = next((c for c in shown if c and "error" not in c), None)
        n = f"{first['n_up']}/{first['n_down']}" if first else "–"
        lines.append(f"| {attribute} | {n} | " + " | ".join(_cell(c, judges, primary) for c in shown) + " |")
    if any(result["groups"].values()):
        labels = sorted({label for g in result["groups"].values() for label in g})
        lines += ["", f"Flip rate by group ({primary}; pooled over attributes; n flippable):", "",
                  "| group | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for label in labels:
            row = [result["groups"][m].get(label) for m in methods]
            lines.append(f"| {label} | " + " | ".join("–" if r is None else f"{_fmt(r['flip_rate'])} ({r['n']})"
                                                      for r in row) + " |")
    return "\n".join(lines) + "\n"


def _cell(cell: dict | None, judges: list[str], primary: str) -> str:
    if cell is None:
        return "–"
    if "error" in cell:
        return "n/a"
    flips = " / ".join(_fmt(cell["judges"].get(j, {}).get("flip_rate")) for j in judges)
    drift = cell["judges"].get(primary, {}).get("drift")
    text = f"{flips} · {_fmt(drift, 3)} · {cell['pixel_mse']:.4f}"
    return f"{text} ({cell['note']})" if cell["note"] else text
