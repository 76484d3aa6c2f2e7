"""What the benchmark measures for one bundle, by capability: reconstruction and generation (any
``LatentModel``), categorical codes (a latent with a ``categorical`` part, on labelled data), classifiers
(a model with ``predict_proba``: per-attribute or per-head scores) and the training budget (bundle meta).

Each function takes a model, a :class:`facegen.quality.judge.Judge` (or any scorer with ``predict_proba``,
``attribute_names`` and ``features``) and batches (dicts of tensors, ``facegen.models.base`` keys) and returns
a JSON-ready dict (plus images for grids); the metrics are those of :mod:`facegen.quality.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from facegen.latent.sampler import fit_density
from facegen.latent.scoring import batched
from facegen.models.base import Batch, LatentModel
from facegen.quality.judge import BATCH, judge_columns
from facegen.quality.metrics import (
    attribute_agreement,
    attribute_tv_per_attribute,
    balanced_accuracy,
    code_class_accuracy,
    frechet_distance,
    psnr,
    sharpness,
    ssim,
    within_one_bin_accuracy,
)

ORDINAL_HEADS = ("age",)  # classifier heads whose classes are ordered bins: within-one-bin accuracy too


def _mean(values) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def label_matrix(batch: Batch, label_names: Sequence[str], names: Sequence[str]) -> torch.Tensor:
    """The 0/1 labels (N, len(names)) of ``names`` from ``batch["attrs"]``, whose columns are ``label_names``."""
    return batch["attrs"][:, [list(label_names).index(n) for n in names]].float()


def judged_attributes(judge, label_names: Sequence[str], attrs: torch.Tensor,
                      asked: Sequence[str] | None = None) -> list[str]:
    """The judge's attributes (in its order) that the data labels and that hold both classes in ``attrs``
    (N, len(label_names)), restricted to ``asked`` when given: the attributes a judge can be scored on."""
    names = []
    for name in judge.attribute_names:
        if name in label_names and (asked is None or name in asked):
            column = attrs[:, list(label_names).index(name)]
            if column.min() != column.max():
                names.append(name)
    return names


def judge_reading(judge, images: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """The judge's P(present) (N, len(names)) on images, columns ``names``."""
    return judge.predict_proba(images)[:, judge_columns(judge, names)]


@torch.no_grad()
def reconstruct(model: LatentModel, batch: Batch) -> torch.Tensor:
    """Decode of encode (the posterior mean for a VAE), conditioned as the model needs."""
    codes = batched(model.encode, batch["image"], BATCH, model.condition_of(batch))
    return batched(model.decode, codes, BATCH)


@torch.no_grad()
def reconstruction(model: LatentModel, judge, batch: Batch, label_names: Sequence[str], names: Sequence[str],
                   recon: torch.Tensor | None = None) -> tuple[dict[str, Any], torch.Tensor]:
    """PSNR, SSIM and sharpness of reconstructions vs originals, and attribute agreement: the judge's mean
    balanced accuracy on reconstructions divided by that on the originals (per attribute too).
    Returns (metrics, recon)."""
    images = batch["image"]
    recon = reconstruct(model, batch) if recon is None else recon
    out: dict[str, Any] = {"n": int(images.shape[0]), "psnr": psnr(recon, images), "ssim": ssim(recon, images),
                           "sharpness": sharpness(recon, images)}
    if names:
        labels = label_matrix(batch, label_names, names)
        per_orig, mean_orig = balanced_accuracy(judge_reading(judge, images, names), labels)
        per_recon, mean_recon = balanced_accuracy(judge_reading(judge, recon, names), labels)
        out.update(judge_bacc_original=mean_orig, judge_bacc_reconstruction=mean_recon,
                   agreement=attribute_agreement(per_recon, per_orig),
                   per_attribute={n: {"original": o, "reconstruction": r,
                                      "agreement": r / o if o > 0 else math.nan}
                                  for n, o, r in zip(names, per_orig, per_recon)})
    return out, recon


@torch.no_grad()
def draw_samples(model: LatentModel, n: int, seed: int, test: Batch, train: Batch,
                 fitted: bool = False) -> tuple[torch.Tensor, str]:
    """n new images and how they were drawn. A model with ``needs_fitted_sampler`` (or ``fitted``: an ex-post
    density, Ghosh et al. 2020) decodes codes of a Gaussian mixture fitted on its training codes
    (:func:`facegen.latent.sampler.fit_density`); the others sample their prior. A conditional model samples
    under the test rows' conditions (cycled), so attribute frequencies can be compared with the test set's."""
    cond = model.condition_of(test) if model.condition_part() is not None else None
    if cond is not None:
        cond = cond[torch.arange(n) % cond.shape[0]]
    if model.needs_fitted_sampler or fitted:
        codes = batched(model.encode, train["image"], BATCH, model.condition_of(train))
        sampler = fit_density(codes, seed=seed)
        return batched(model.decode, sampler.sample(n, seed).to(model.device()), BATCH, cond), \
            f"{sampler.describe()}, fitted on {codes.shape[0]} training codes"
    generator = torch.Generator().manual_seed(seed)
    chunks, done = [], 0
    while done < n:
        size = min(BATCH, n - done)
        chunks.append(model.sample(size, None if cond is None else cond[done:done + size], generator=generator))
        done += size
    return torch.cat(chunks), "the model's prior" + (" under the test rows' conditions" if cond is not None else "")


@torch.no_grad()
def generation(judge, samples: torch.Tensor, test: Batch, train: Batch, label_names: Sequence[str],
               names: Sequence[str], cache: dict | None = None) -> dict[str, Any]:
    """Fréchet distance in the judge's features between samples and test images, and the attribute-frequency
    TV between the judge's 0/1 readings of the samples and the test labels; each with its floor, what two real
    sets of these sizes score (the training images in place of the samples: sampling noise and the judge's
    errors included), and the TV the judge's errors alone cost (its readings of the test images themselves).
    ``cache`` keeps the real images' features and readings between bundles."""
    cache = {} if cache is None else cache
    if "test_features" not in cache:
        cache["test_features"] = judge.features(test["image"])
        cache["train_features"] = judge.features(train["image"])
    real, other = cache["test_features"], cache["train_features"]
    out: dict[str, Any] = {"n_samples": int(samples.shape[0]), "n_test": int(real.shape[0]),
                           "n_train": int(other.shape[0]), "fd": frechet_distance(judge.features(samples), real),
                           "fd_floor": frechet_distance(other, real) if len(other) >= 2 else math.nan,
                           "feature_dim": int(real.shape[1])}
    if names:
        labels = label_matrix(test, label_names, names)
        key = ("readings", tuple(names))
        if key not in cache:
            cache[key] = (judge_reading(judge, test["image"], names) >= 0.5,
                          judge_reading(judge, train["image"], names) >= 0.5)
        on_test, on_train = cache[key]
        per = attribute_tv_per_attribute(judge_reading(judge, samples, names) >= 0.5, labels)
        floor = attribute_tv_per_attribute(on_train, labels)
        judge_only = attribute_tv_per_attribute(on_test, labels)
        out.update(attribute_tv=float(per.mean()), attribute_tv_floor=float(floor.mean()),
                   attribute_tv_judge=float(judge_only.mean()),
                   per_attribute={n: {"tv": float(t), "floor": float(f), "judge": float(j),
                                      "test_rate": float(labels[:, i].mean())}
                                  for i, (n, t, f, j) in enumerate(zip(names, per, floor, judge_only))})
    return out


@torch.no_grad()
def code_accuracy(model: LatentModel, batch: Batch) -> dict[str, Any] | None:
    """Per categorical code part, ``code_class_accuracy`` of the encoded code against ``batch["label"]``;
    None without a categorical part or labelled rows."""
    labels = batch.get("label")
    parts = [p for p in model.code_parts() if p.kind == "categorical"]
    if labels is None or not (labels >= 0).any() or not parts:
        return None
    codes = batched(model.encode, batch["image"], BATCH, model.condition_of(batch))
    out, start = {"n_labelled": int((labels >= 0).sum())}, 0
    for part in model.latent_parts:
        if part in parts:
            out[part.name] = code_class_accuracy(codes[:, start:start + part.size], labels)
        start += part.size
    return out


def _predict(model, images: torch.Tensor):
    outs = [model.predict_proba(images[i:i + BATCH]) for i in range(0, images.shape[0], BATCH)]
    if isinstance(outs[0], dict):
        return {head: torch.cat([o[head] for o in outs]) for head in outs[0]}
    return torch.cat(outs)


@torch.no_grad()
def classifier_scores(model, batch: Batch, label_names: Sequence[str]) -> dict[str, Any] | None:
    """A model with ``predict_proba``: over named attributes (a tensor (N, A) with ``attribute_names``), the
    balanced accuracy per attribute the data labels with both classes and its mean; over heads (a dict of
    class probabilities keyed by a batch label column), per head accuracy and balanced accuracy (mean recall
    over the classes present) on the labelled rows, and within-one-bin accuracy for ordered heads (age)."""
    if not callable(getattr(model, "predict_proba", None)):
        return None
    pred = _predict(model, batch["image"])
    if not isinstance(pred, dict):
        known = list(model.attribute_names)
        names = [n for n in known if n in label_names]
        if not names:
            return {"kind": "attributes", "note": "the data labels none of the classifier's attributes"}
        per, mean = balanced_accuracy(pred[:, [known.index(n) for n in names]], label_matrix(batch, label_names, names))
        return {"kind": "attributes", "mean_balanced_accuracy": mean, "per_attribute": dict(zip(names, per))}
    heads: dict[str, Any] = {}
    for head, probs in pred.items():
        truth = batch.get(head)
        if truth is None or not (truth >= 0).any():
            continue
        keep = truth >= 0
        guess, truth = probs.argmax(1)[keep], truth[keep]
        recalls = [float((guess[truth == c] == c).float().mean()) for c in truth.unique()]
        heads[head] = {"n": int(keep.sum()), "accuracy": float((guess == truth).float().mean()),
                       "balanced_accuracy": float(np.mean(recalls))}
        if head in ORDINAL_HEADS:
            heads[head]["within_one_bin"] = within_one_bin_accuracy(guess, truth)
    return {"kind": "heads", "heads": heads, "mean_accuracy": _mean(h["accuracy"] for h in heads.values())}


def training_budget(meta: dict, config, train_rows: int | None, rows_note: str = "") -> dict[str, Any]:
    """What training cost, from the bundle's ``meta["history"]`` (one entry per epoch) and config: epochs,
    images seen (epochs x training rows), training wall time (sum over epochs of rows / the epoch's
    ``train/images_per_s``: training passes only, no validation or start-up) and CPU-minutes (that time x
    workers x CPUs per worker). ``found`` says what was available."""
    history = meta.get("history") or []
    out: dict[str, Any] = {"epochs": len(history) or None, "best_epoch": meta.get("best_epoch"),
                           "resumes": max(len(meta.get("starts") or [0]) - 1, 0), "train_rows": train_rows,
                           "images_seen": None, "train_seconds": None, "cpus": None, "cpu_minutes": None}
    found = []
    if not history:
        return {**out, "found": "no training history in the bundle meta"}
    found += [f"history of {len(history)} epochs"] + ([rows_note] if rows_note else [])
    limit = getattr(config.data, "max_rows", 0)
    rows = min(train_rows, limit) if train_rows is not None and limit else train_rows
    out["train_rows"] = rows
    if rows is None:
        found.append("training rows unknown (the bundle's data.shards is not readable here)")
        return {**out, "found": "; ".join(found)}
    out["images_seen"] = rows * len(history)
    rates = [h.get("train/images_per_s") for h in history]
    if all(r and r > 0 for r in rates):
        out["train_seconds"] = float(sum(rows / r for r in rates))
        found.append("per-epoch train/images_per_s")
    else:
        found.append("no train/images_per_s in the history: wall time unknown")
    train = config.train
    if getattr(train, "use_gpu", False):
        found.append(f"trained on {train.num_workers} GPU worker(s): CPU-minutes not comparable")
    else:
        out["cpus"] = float(train.num_workers * train.cpus_per_worker)
        if out["train_seconds"] is not None:
            out["cpu_minutes"] = out["train_seconds"] * out["cpus"] / 60
    return {**out, "found": "; ".join(found)}
