"""The ``facegen evaluate`` page: one table per section, one row per bundle (per bundle and attribute for
edits), written through :func:`facegen.reporting.page.write_analysis` as ``quality.{md,html,json}``.

``quality.json`` holds ``header``, ``judge``, ``settings``, ``bundles`` (each bundle's full results, see
:func:`facegen.quality.benchmark.evaluate_bundle`) and ``sections`` (titles and picture paths).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from facegen.quality.editing import meets_editing_target
from facegen.reporting.page import Part, write_analysis

DEFINITIONS = """\
All images are compared on the [0, 1] scale. **PSNR** is 10 log10(1 / MSE) with the MSE pooled over the set \
(inf only when every pair is identical); **SSIM** is the standard 11x11, sigma 1.5 SSIM, averaged over images. \
**Judge bacc** is the judge's mean balanced accuracy over the judged attributes (those it knows that vary in \
the test labels) at 0.5; **agreement** is its bacc on reconstructions divided by its bacc on the originals \
(1 = the reconstruction keeps everything the judge reads). **FD** is the Fréchet distance between Gaussians \
fitted to the judge's penultimate features (its trunk's output) of n samples and of the test images; it is not \
FID (other features, small n: biased upward), so read it against its **floor**, the same distance between \
the test images and as many training images. **Attribute TV** is the mean over judged attributes of \
|P_samples - P_test|, the judge's positive rate on samples vs the test labels' rate; its floor is the judge's \
rate on the test images themselves vs their labels (the judge's own bias). **Flip rate**: the fraction of \
edits the judge reads as the asked value (every pair asks to flip the original's label). **Drift**: the mean \
over the other judged attributes of how often the judge's reading changes between the reconstruction (for a \
`+residual` method, the original) and the edit, counting only the labels the renderer's counterfactual leaves \
alone (made blond, a face stops being black-haired: that is the edit); **drift (all)** counts every other \
label. A `+residual` method shows the original plus what the edit changed in the decode. **Meets**: flip >= \
0.9, drift <= 0.05 and fidelity PSNR >= recon PSNR - 2 dB (issue 12's editing target). **Fidelity** \
PSNR/SSIM: the edit vs the renderer's counterfactual; **recon** PSNR: the reconstruction vs the original (the \
model's blur, which caps fidelity); **unedited**: the reconstruction vs the counterfactual (what doing nothing \
scores); the **counterfactual** method is the renderer's own edit (what a perfect editor scores by this \
judge). **Code accuracy**: a categorical code read as a class after the best one-to-one code-to-class \
assignment. **Budget**: images seen = epochs x training rows; train time = \
sum over epochs of rows / train/images_per_s (training passes only); CPU-minutes = train time x workers x \
CPUs per worker."""


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: numbers to ``digits`` significant digits, inf as ``inf``, missing / NaN as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "-" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.{digits}g}")
    return str(value)


def table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) if rows else "none"


def _nanmean(values: list) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _budget(results: list[dict]) -> Part:
    rows = [[f"`{r['name']}`", r["family"], f"`{r['bundle']}`", r["budget"]["epochs"], r["budget"]["images_seen"],
             r["budget"]["train_seconds"], r["budget"]["cpu_minutes"], r["budget"]["found"],
             r.get("seconds")] for r in results]
    text = table(["bundle", "family", "location", "epochs", "images seen", "train s", "CPU-min", "found", "eval s"], rows)
    return Part("budget", "Bundles and training budget", text)


def _reconstruction(results: list[dict]) -> Part:
    rows, part = [], Part("reconstruction", "Reconstruction (encode -> decode, test split)")
    for r in results:
        rec = r.get("reconstruction")
        if rec:
            rows.append([f"`{r['name']}`", rec["n"], rec["psnr"], rec["ssim"], rec.get("sharpness"),
                         rec.get("judge_bacc_original"),
                         rec.get("judge_bacc_reconstruction"), rec.get("agreement")])
            part.pictures[f"reconstructions {r['name']} (originals above)"] = r["pictures"]["reconstructions"]
    part.markdown = table(["bundle", "n", "PSNR dB", "SSIM", "sharpness", "judge bacc originals", "judge bacc recon",
                           "agreement"], rows)
    return part


def _generation(results: list[dict]) -> Part:
    rows, part = [], Part("generation", "Generation (samples vs the test split)")
    for r in results:
        for key, picture in (("generation", "samples"), ("generation_fitted", "samples_fitted")):
            gen = r.get(key)
            if gen:
                rows.append([f"`{r['name']}`", gen["sampler"], gen["n_samples"], gen["fd"], gen["fd_floor"],
                             gen.get("attribute_tv"), gen.get("attribute_tv_floor"),
                             gen.get("attribute_tv_judge")])
                part.pictures[f"{picture.replace('_', ' ')} {r['name']}"] = r["pictures"][picture]
    part.markdown = table(["bundle", "drawn from", "n", "FD (judge features)", "FD floor (test vs train)",
                           "attribute TV", "TV floor (train vs test)", "TV of the judge's errors"], rows)
    return part


EDIT_KEYS = ("flip_rate", "drift", "drift_all", "fidelity_psnr", "fidelity_ssim", "unedited_psnr", "recon_psnr")


def _editing(results: list[dict]) -> Part:
    summary, detail, part = [], [], Part("editing", "Editing against the renderer's counterfactuals")
    for r in results:
        found = (r.get("editing") or {}).get("rows") or []
        for method in dict.fromkeys(row["method"] for row in found):
            mine = [row for row in found if row["method"] == method]
            summary.append([f"`{r['name']}`", method, len(mine), sum(map(meets_editing_target, mine))] + [
                _nanmean([row.get(k, math.nan) for row in mine]) for k in EDIT_KEYS])
        detail += [[f"`{r['name']}`", row["attribute"], row["method"], row["n"], row["flip_rate"], row["drift"],
                    row.get("drift_all"), row["fidelity_psnr"], row["fidelity_ssim"], row["unedited_psnr"],
                    row["recon_psnr"], meets_editing_target(row)] for row in found]
        part.pictures.update({f"{caption} {r['name']} (rows: original, counterfactual, reconstruction, edit)": path
                              for caption, path in r["pictures"].items() if caption.startswith("edits")})
    head = ["flip rate", "drift", "drift (all)", "fidelity PSNR", "fidelity SSIM", "unedited PSNR", "recon PSNR"]
    part.markdown = ("Mean over attributes, per bundle and method (meets: attributes meeting the editing "
                     "target):\n\n" + table(["bundle", "method", "attributes", "meets", *head], summary)
                     + "\n\nPer attribute:\n\n" + table(["bundle", "attribute", "method", "n", *head, "meets"],
                                                         detail))
    return part


def _codes_and_classifiers(results: list[dict]) -> Part:
    codes, attrs, heads = [], [], []
    for r in results:
        for key, value in (r.get("codes") or {}).items():
            if key != "n_labelled":
                codes.append([f"`{r['name']}`", key, r["codes"]["n_labelled"], value])
        clf = r.get("classifier") or {}
        if clf.get("kind") == "attributes" and "per_attribute" in clf:
            per = {k: v for k, v in clf["per_attribute"].items() if not math.isnan(v)}
            worst = min(per, key=per.get) if per else None
            attrs.append([f"`{r['name']}`", clf["mean_balanced_accuracy"], len(per),
                          f"{worst} ({per[worst]:.3f})" if worst else "-"])
        for head, s in (clf.get("heads") or {}).items():
            heads.append([f"`{r['name']}`", head, s["n"], s["accuracy"], s["balanced_accuracy"],
                          s.get("within_one_bin")])
    text = ("Categorical codes vs labels:\n\n" + table(["bundle", "code", "labelled", "code-class accuracy"], codes)
            + "\n\nAttribute classifiers (balanced accuracy at 0.5):\n\n"
            + table(["bundle", "mean bacc", "attributes", "worst"], attrs)
            + "\n\nMulti-head classifiers:\n\n"
            + table(["bundle", "head", "labelled", "accuracy", "balanced acc", "within one bin"], heads))
    return Part("labels", "Codes and classifiers", text)


def write_quality(results: list[dict], judge, settings, out: str) -> dict[str, str]:
    """``out/quality.{md,html,json}`` of the benchmark ``results``."""
    header = {"judge": judge.describe(), "split": ", ".join(sorted({f"{r['split']} of `{r['shards']}`"
                                                                     for r in results})),
              "n": f"up to {settings.n} test and training images, {settings.n} samples; up to {settings.edit_n} "
                   "edit pairs per attribute",
              "seed": str(settings.seed), "bundles": str(len(results))}
    if settings.slot_push:
        header["slot edits"] = f"pushed {settings.slot_push:g} past the target value (1+push on, -push off)"
    if settings.read_conditions:
        header["conditions"] = f"a conditional encoder's condition is read from each original by {settings.guide}"
    notes = [f"- `{r['name']}`: {note}" for r in results for note in r["notes"]]
    parts = [_budget(results), _reconstruction(results), _generation(results), _editing(results),
             _codes_and_classifiers(results),
             Part("definitions", "What the numbers mean", DEFINITIONS + ("\n\n" + "\n".join(notes) if notes else ""))]
    extra = {"judge": {"bundle": judge.location, "family": judge.family, "resolution": judge.resolution,
                       "attributes": list(judge.attribute_names)},
             "settings": {"n": settings.n, "edit_n": settings.edit_n, "seed": settings.seed,
                          "attributes": list(settings.attributes) if settings.attributes else None,
                          "counterfactuals": settings.counterfactuals, "guide": settings.guide,
                          "read_conditions": settings.read_conditions, "slot_push": settings.slot_push},
             "bundles": [{**r, "pictures": {c: os.path.relpath(p, out) for c, p in r["pictures"].items()}}
                         for r in results]}
    return write_analysis("facegen quality benchmark", header, parts, out, extra, name="quality")
