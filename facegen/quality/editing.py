"""Edit metrics for one attribute edit, from a judge's predictions (N, A) (probabilities or 0/1; >= 0.5 reads
as present) and, where a counterfactual exists (synthetic data), from images.

What goes in:
    flip_rate                judge on the edited images, ground-truth labels of the originals
    drift_of_others          judge on a reference and on the edited images; the reference should be the
                             decoded original (reconstruction), not the photo, so that reconstruction error,
                             which the edit did not cause, is not counted as drift; and, where the ground
                             truth is known, which attributes the true edit leaves alone (a face made blond
                             is no longer black-haired: that change is the edit, not drift)
    counterfactual_fidelity  edited images and the true images of the same faces with the attribute changed
"""

from __future__ import annotations

import math

import numpy as np
import torch

from facegen.quality.metrics import _columns, _nanmean, psnr, ssim


def flip_rate(edited_pred, original_labels, target: int, value: int = 1, threshold: float = 0.5) -> float:
    """Fraction of edits that reached the target value: among faces whose ground-truth label (N, A) of
    attribute column ``target`` is *not* ``value`` (0 or 1), the fraction whose edited image the judge
    (``edited_pred`` (N, A)) reads as ``value``.

    Faces that already have ``value`` are left out (their edit asks for no change; counting them would add the
    attribute's base rate). Eligibility comes from the ground truth, not from the judge's reading of the
    original, so the judge's errors on originals do not pick the set. NaN when no face is eligible.
    """
    edited = _columns(edited_pred)[:, target] >= threshold  # (N,)
    truth = _columns(original_labels)[:, target] >= 0.5
    if edited.shape != truth.shape:
        raise ValueError(f"edited_pred has {edited.shape[0]} rows, original_labels {truth.shape[0]}")
    eligible = truth != bool(value)
    return float((edited[eligible] == bool(value)).mean()) if eligible.any() else math.nan


def drift_per_attribute(reference_pred, edited_pred, target: int, threshold: float = 0.5,
                        held=None) -> np.ndarray:
    """Per attribute (A,), the fraction of images whose judged value (>= ``threshold``) differs between the
    reference predictions (N, A) and the edited images' predictions (N, A); NaN at ``target``, which the edit
    is meant to change. ``held`` (N, A) bool, optional: the (face, attribute) cells the true edit leaves
    alone (a counterfactual's labels equal to the original's); only those count, and an attribute no face
    holds is NaN. Compute it on the same rows as :func:`flip_rate` to match its faces."""
    before, after = _columns(reference_pred) >= threshold, _columns(edited_pred) >= threshold
    if before.shape != after.shape:
        raise ValueError(f"reference_pred {before.shape} and edited_pred {after.shape} differ in shape")
    held = np.ones_like(before) if held is None else _columns(held).astype(bool)
    if held.shape != before.shape:
        raise ValueError(f"held {held.shape} and the predictions {before.shape} differ in shape")
    counts = held.sum(0)  # (A,)
    changed = np.where(counts > 0, ((before != after) & held).sum(0) / np.maximum(counts, 1), np.nan)
    changed[target] = np.nan
    return changed


def drift_of_others(reference_pred, edited_pred, target: int, threshold: float = 0.5, held=None) -> float:
    """Mean over the non-target attributes of :func:`drift_per_attribute`: how often an attribute the edit
    should leave alone changes its judged value (0 = nothing else changed). NaN with no other attribute."""
    return _nanmean(drift_per_attribute(reference_pred, edited_pred, target, threshold, held))


# Issue 12's bar for an edit that works, per attribute: the judge reads the asked value on 90% of the faces, the
# other attributes move on at most 5%, and the edit is within 2 dB as close to the counterfactual as the
# reconstruction is to the original (a blurry decoder is not counted twice).
TARGET_FLIP, TARGET_DRIFT, TARGET_FIDELITY_GAP_DB = 0.9, 0.05, 2.0


def meets_editing_target(row: dict) -> bool:
    """Whether one attribute's edit row (``flip_rate``, ``drift``, ``fidelity_psnr``, ``recon_psnr``, as
    :func:`facegen.quality.edits.score_edits` writes them) meets the editing target; a missing figure fails."""
    try:
        return (row["flip_rate"] >= TARGET_FLIP and row["drift"] <= TARGET_DRIFT
                and row["fidelity_psnr"] >= row["recon_psnr"] - TARGET_FIDELITY_GAP_DB)
    except (KeyError, TypeError):
        return False


def counterfactual_fidelity(edited: torch.Tensor, counterfactual: torch.Tensor) -> dict[str, float]:
    """How close edited images are to their counterfactuals, both (N, 3, H, W) in [-1, 1]:
    ``{"psnr": pooled PSNR in dB, "ssim": mean SSIM}`` (see :func:`facegen.quality.metrics.psnr`);
    ``inf`` and 1.0 when every edit equals its counterfactual."""
    return {"psnr": psnr(edited, counterfactual), "ssim": ssim(edited, counterfactual)}
