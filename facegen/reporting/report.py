"""The quality report: every bundle in a run folder evaluated on held-out data, one Markdown page + JSON.

What a section holds depends on what the model can do, not on its family name: every model gets its test
metrics and loss curves; a ``LatentModel`` gets reconstructions, samples and traversals (plus SSIM); a model
with conditions gets the same latent under every condition; FairFace heads get confusion matrices; an InfoGAN
on digits gets its categorical-code accuracy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from facegen import io as fsio
from facegen.bundle import Bundle, load_bundle
from facegen.data.pipeline import read_examples
from facegen.data.shards import read_manifest
from facegen.errors import FacegenError
from facegen.latent import grids
from facegen.latent.sampler import fit_sampler, sample_faces
from facegen.metrics import MetricMeans
from facegen.models import LatentModel
from facegen.models.code_accuracy import categorical_code_accuracy
from facegen.models.losses import mse_per_image, ssim_per_image
from facegen.reporting.confusion import save_confusion_matrices


@dataclass
class Section:
    """One bundle's part of the report: where it is, its metrics, and its pictures (name -> file)."""

    bundle: str
    family: str
    metrics: dict[str, float]
    pictures: dict[str, str] = field(default_factory=dict)


def find_bundles(folder: str) -> list[str]:
    """Bundles (folders holding meta.json and weights.pt) anywhere under ``folder``, sorted; the copies that
    experiment tracking keeps as MLflow artefacts (``training/tracking.py``: ``mlartifacts/``) are skipped."""
    fs, root = fsio.resolve(folder)
    files = set(fsio.list_files(fs, root, recursive=True))
    found = {os.path.dirname(p) for p in files if p.endswith("meta.json") and
             os.path.join(os.path.dirname(p), "weights.pt") in files and ".tmp-" not in p
             and "mlartifacts" not in p.split("/")}
    return [fsio.to_uri(fs, fsio.join(root, p)) for p in sorted(found)]


@torch.no_grad()
def evaluate(bundle: Bundle, batch: dict[str, torch.Tensor], batch_size: int = 64) -> dict[str, float]:
    """Test metrics: the model's own validation metrics over ``batch``, plus image-quality measures."""
    model = bundle.model
    means = MetricMeans()
    torch.manual_seed(0)
    for start in range(0, batch["image"].shape[0], batch_size):
        part = {k: v[start:start + batch_size] for k, v in batch.items()}
        metrics = model.validation_step(part)
        if isinstance(model, LatentModel):  # for a GAN: how well encode -> regenerate preserves the image
            recon = model.decode(model.encode(part["image"], model.condition_of(part)))
            metrics["recon_mse"] = mse_per_image(recon, part["image"]).mean()
            metrics["recon_ssim"] = ssim_per_image(recon, part["image"]).mean()
        means.add(metrics, part["image"].shape[0])
    out = model.summarize_metrics(means.reduce())
    labels = batch.get("label")
    if labels is not None and (labels >= 0).any():
        if isinstance(model, LatentModel) and any(p.kind == "categorical" for p in model.code_parts()):
            out["categorical_code_accuracy"] = categorical_code_accuracy(model, batch["image"], labels)
    return out


def loss_curves(history: list[dict[str, float]], path: str) -> str | None:
    """Per-epoch curves of every reported loss-like metric (and BEGAN's M), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for row in history for k in row if k.split("/")[-1].endswith("loss") or k.endswith("/M")})
    if not history or not keys:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        ax.plot([row["epoch"] for row in history if key in row], [row[key] for row in history if key in row],
                marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_yscale("symlog")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def draw(bundle: Bundle, batch: dict[str, torch.Tensor], metrics: dict[str, float], out: str) -> dict[str, str]:
    """The pictures this model can make, saved under ``out``."""
    model, pictures = bundle.model, {}
    curves = loss_curves(bundle.meta.get("history", []), f"{out}/loss_curves.png")
    if curves:
        pictures["loss curves"] = curves
    if isinstance(model, LatentModel):
        images, cond = batch["image"][:256], model.condition_of({k: v[:256] for k, v in batch.items()})
        if model.needs_fitted_sampler:  # the AE: a density fitted on the held-out codes

            samples = sample_faces(model, fit_sampler(model, images), 64)
            pictures["samples (ex-post density)"] = grids.save_png(grids.image_grid(samples, nrow=8),
                                                             f"{out}/samples.png")
        else:
            pictures["samples"] = grids.save_png(grids.sample_grid(model, 64, cond=cond), f"{out}/samples.png")
        recon = grids.reconstruction_grid(model, images[:32], cond=None if cond is None else cond[:32])
        pictures["reconstructions"] = grids.save_png(recon, f"{out}/reconstructions.png")
        dims = grids.most_active_dims(model, images, k=8, cond=cond)
        pictures["traversals"] = grids.save_png(grids.traversal_grid(model, images, dims, cond=cond),
                                                f"{out}/traversals.png")
        if model.condition_part() is not None:
            codes = model.encode(images[:8], cond[:8])
            grid = model.decode_all_conditions(codes)  # (8, K, 3, H, W)
            pictures["every condition"] = grids.save_png(
                grids.image_grid(grid.flatten(0, 1), nrow=grid.shape[1]), f"{out}/conditions.png")
    if any(k.startswith("cm/") for k in metrics):
        for path in save_confusion_matrices(metrics, out):
            if path.endswith(".png"):
                pictures[os.path.basename(path)[:-4].replace("_", " ")] = path
    return pictures


def report_bundle(location: str, out: str, shards: str | None = None, split: str = "test",
                  n: int = 512) -> Section:
    bundle = load_bundle(location)
    manifest = read_manifest(shards or bundle.config.data.shards)
    if split not in manifest.splits or not manifest.rows(split):
        split = "val"
    batch = read_examples(manifest, split, n)
    metrics = evaluate(bundle, batch)
    os.makedirs(out, exist_ok=True)
    return Section(bundle=location, family=bundle.config.family, metrics=metrics,
                   pictures=draw(bundle, batch, metrics, out))


HEADLINE = ("loss", "recon_mse", "recon_ssim", "mean_accuracy", "mean_f1", "mean_balanced_accuracy",
            "race/accuracy", "age/accuracy", "gender/accuracy", "categorical_code_accuracy", "M", "kl")


def write_report(sections: list[Section], out: str) -> tuple[str, str]:
    """``out/report.md`` (headline metrics and pictures, relative links) and ``out/report.json`` (all)."""
    lines = ["# facegen quality report", ""]
    for section in sections:
        lines += [f"## {section.family}: `{section.bundle}`", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {section.metrics[k]:.4g} |" for k in HEADLINE if k in section.metrics]
        lines.append("")
        for name, path in section.pictures.items():
            lines += [f"**{name}**", "", f"![{name}]({os.path.relpath(path, out)})", ""]
    md, js = f"{out}/report.md", f"{out}/report.json"
    with open(md, "w") as f:
        f.write("\n".join(lines))
    with open(js, "w") as f:
        json.dump([vars(s) for s in sections], f, indent=2)
    return md, js


def build_report(folder: str, out: str, shards: str | None = None) -> tuple[str, str]:
    bundles = find_bundles(folder)
    if not bundles:
        raise FacegenError(f"{folder}: no model bundles found (a bundle folder holds meta.json and weights.pt)")
    sections = [report_bundle(b, f"{out}/{i:02d}-{load_family(b)}", shards) for i, b in enumerate(bundles)]
    return write_report(sections, out)


def load_family(location: str) -> str:
    fs, path = fsio.resolve(location)
    return json.loads(fsio.read_bytes(fs, fsio.join(path, "config.json")))["model"]["family"]


def add_report_arguments(parser) -> None:
    parser.add_argument("folder", help="a run folder (or storage path) holding one or more bundles")
    parser.add_argument("--out", default=None, help="where to write report.md/json (default FOLDER/report)")
    parser.add_argument("--shards", default=None, help="held-out data (default: each bundle's data.shards)")


def run_report(args) -> int:
    md, js = build_report(args.folder, args.out or f"{args.folder.rstrip('/')}/report", args.shards)
    print(f"report: {md}\n        {js}")
    return 0
