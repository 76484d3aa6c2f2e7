"""In-process classifier training for bench/augment_gain.py: a fixed number of optimiser steps, no Ray.

Why not the harness (``trainer.fit``): equal optimiser steps is the fair comparison, and the harness counts
epochs, so 200 faces and 200 faces + 1000 variants cannot get the same steps exactly; it also starts a Ray Train
worker group per run, which on a shared 2-core box costs more than the training. Same model and config as the
harness (``configs/classifier_synth64.yaml``: small CNN, BCE, Adam at its lr, hflip), same batch size; the state
with the best validation mean balanced accuracy (checked every ``eval_every`` steps) is kept, for every arm alike
(validation loss peaked after 50 of 400 steps on 200 faces, long before the accuracy did).
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import torch
from PIL import Image

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.augment.celeba import SourceLabels, edited_labels, read_source_labels
from facegen.bundle import write_bundle
from facegen.config import load_config
from facegen.images import from_uint8
from facegen.models import build_model

CONFIG = "configs/classifier_synth64.yaml"


def classifier_config(shards: str, batch_size: int):
    return load_config(CONFIG, [f"data.shards={shards}", f"data.batch_size={batch_size}"])


def load_variants(out: str, labels: SourceLabels, relabelled: bool) -> dict[str, torch.Tensor]:
    """Every variant the augment job wrote under ``out`` as a batch (image, attrs (N, 40)). relabelled: take the
    job's own label file (written with --relabel); else label by the edit's sign from the manifest (what the job
    writes without --relabel), against the sources' ``labels``."""
    rows = [json.loads(line) for line in open(f"{out}/manifest.jsonl")]
    written = read_source_labels(f"{out}/list_attr_celeba.txt") if relabelled else None
    images, attrs = [], []
    for row in rows:
        if row["output"] is None or not row["variant"]:
            continue
        images.append(from_uint8(np.asarray(Image.open(f"{out}/{row['output']}", formats=["PNG"]).convert("RGB"))))
        if written is not None:
            attrs.append(written.celeba_vector(row["output"].split("/", 1)[1]))
        else:
            key = os.path.basename(row["source"])
            values = edited_labels(labels.attrs[key], labels.names, row["edits"], frozenset())
            attrs.append(SourceLabels("", labels.names, {key: values}, None).celeba_vector(key))
    return {"image": torch.stack(images).contiguous(), "attrs": torch.tensor(attrs, dtype=torch.float32)}


def concat(*batches: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in ("image", "attrs")}


def _val_score(model, val: dict) -> float:
    model.eval()
    score = test_metrics(model, val)["mean_balanced_accuracy"]
    model.train()
    return score


def train_steps(cfg, train: dict, val: dict, steps: int, seed: int, eval_every: int = 25,
                originals: int | None = None, share: float | None = None):
    """The classifier after ``steps`` Adam steps on batches drawn with replacement from ``train`` (with
    ``share``: each row from the variants, rows ``originals:``, with that probability, else from the originals,
    the first ``originals`` rows; without: uniformly over all rows); returns
    (model at its best validation mean balanced accuracy, that score, the step it was reached, images seen)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model).train()
    optimiser = torch.optim.Adam(model.parameters_for("main"), lr=cfg.train.lr, betas=tuple(cfg.train.betas))
    draw = torch.Generator().manual_seed(seed)
    n, size = train["image"].shape[0], cfg.data.batch_size
    best, best_score, best_step = None, -1.0, 0
    for step in range(1, steps + 1):
        index = torch.randint(n, (size,), generator=draw)
        if share is not None:  # mix ratio: how much of each batch is variants, whatever their number
            variant = torch.rand(size, generator=draw) < share
            index = torch.where(variant, originals + torch.randint(n - originals, (size,), generator=draw),
                                torch.randint(originals, (size,), generator=draw))
        images = train["image"][index]
        if cfg.data.hflip:
            flip = torch.rand(size, generator=draw) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        out = model({"image": images, "attrs": train["attrs"][index]})
        optimiser.zero_grad(set_to_none=True)
        out.loss.backward()
        optimiser.step()
        if step % eval_every == 0 or step == steps:
            score = _val_score(model, val)
            if score > best_score:
                best, best_score, best_step = copy.deepcopy(model.state_dict()), score, step
    model.load_state_dict(best)
    return model.eval(), best_score, best_step, steps * size


@torch.no_grad()
def test_metrics(model, test: dict, batch_size: int = 100) -> dict[str, float]:
    """The model's own test metrics (per-attribute balanced accuracy and their mean), as ``evaluate`` reports."""
    from facegen.metrics import MetricMeans

    means = MetricMeans()
    for start in range(0, test["image"].shape[0], batch_size):
        part = {k: v[start:start + batch_size] for k, v in test.items()}
        means.add(model.validation_step(part), part["image"].shape[0])
    return model.summarize_metrics(means.reduce())


def save_classifier(model, cfg, dest: str) -> str:
    """``model`` as a classifier bundle (the self-trained guide)."""
    meta = {"dataset": "celeba", "resolution": cfg.model.resolution, "attribute_names": list(CELEBA_ATTRIBUTES)}
    return write_bundle(dest, config=cfg.to_dict(), weights=model.state_dict(), meta=meta)
