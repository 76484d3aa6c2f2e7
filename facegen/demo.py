"""``facegen demo``: synthetic faces -> Parquet shards -> two attribute classifiers (the judge that scores,
the guide that steers) and one generative model on Ray Train (2 CPU workers each) -> pictures, quality report,
latent analysis and the quality benchmark of that model.

The model is the conditional editor (``configs/cvae_edit_demo64.yaml``): of the models measured at the demo's
budget it is the one whose edits work (README "The demo's model"); ``--config`` trains another (the VAE:
``configs/vae_demo64.yaml``). ``make demo`` (``jobs/demo.py``) runs this, then serves the result with the Serve
app of ``serve/`` and sends one edit over HTTP: the serving step lives beside the service, outside the
installed package.

Every step is the product's own code path (the same functions ``facegen synth|prepare|train`` call), so the
demo doubles as an end-to-end check. Steps whose output already exists are reused, so a second run only
retrains (which itself resumes from the run's checkpoints).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from facegen import io as fsio
from facegen.analysis.run import analyze
from facegen.bundle import load_bundle
from facegen.config import load_config
from facegen.data.celeba import read_celeba
from facegen.data.pipeline import read_examples
from facegen.data.shards import write_shards
from facegen.data.counterfactual import write_counterfactuals
from facegen.data.synth import write_synthetic
from facegen.errors import FacegenError
from facegen.latent import grids
from facegen.quality.benchmark import Settings, evaluate
from facegen.quality.sections import draw_samples
from facegen.quality.editing import TARGET_FLIP, meets_editing_target
from facegen.quality.edits import CEILING
from facegen.reporting.report import build_report
from facegen.runtime import init_ray, ray_logs_dir
from facegen.training.tracking import ui_command
from facegen.training.trainer import fit, set_aside_stale_run

DEFAULT_CONFIG = "configs/cvae_edit_demo64.yaml"  # its comment has the variants measured for the demo
CLASSIFIER_CONFIG = "configs/classifier_synth64.yaml"
GUIDE_NAME = "guide_synth64"
CONDITION_PUSH = 0.25  # a conditional model's edits set an entry to 1.25 / -0.25 (README "Pushing a condition")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="folder for data, runs and pictures (default out/demo)")
    parser.add_argument("--n", type=int, default=3000, help="synthetic faces to render (default 3000)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"the generative model to train, analyse, benchmark and serve (default {DEFAULT_CONFIG}, "
                             f"the conditional editor; configs/vae_demo64.yaml: the VAE, edited by guided steps)")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's train.epochs")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    parser.add_argument("--classifier-epochs", type=int, default=6,
                        help="epochs of the attribute classifier that scores edits (default 6)")
    parser.add_argument("--guide-epochs", type=int, default=6,
                        help="epochs of the second classifier (another seed) that the editor trains against and "
                             "guided edits steer by; 0: none (only for a model that needs none) (default 6)")


def fit_current(cfg):
    """``fit``; a run an earlier demo left with other settings (its configs have changed since) starts afresh."""
    aside = set_aside_stale_run(cfg)
    if aside:
        print(f"[facegen] {cfg.train.name}: an earlier demo trained it with other settings; moved to {aside}, "
              f"training afresh", flush=True)
    return fit(cfg)


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


@torch.no_grad()
def draw_pictures(model, manifest, out: str) -> dict[str, str]:
    """Reconstruction, sample and traversal grids of the trained model, on held-out faces. Samples decode codes
    of a Gaussian mixture fitted on training codes (the prior's draws fall between the faces the encoder uses;
    a conditional model's under held-out faces' attributes). A conditional model encodes each face with its own
    attributes and its traversals sweep condition entries: its edits."""
    val, train = read_examples(manifest, "val", 256), read_examples(manifest, "train", 512)
    images, cond = val["image"], model.condition_of(val)
    torch.manual_seed(0)
    dims = grids.most_active_dims(model, images, k=8, cond=cond)
    samples = grids.image_grid(draw_samples(model, 64, 0, val, train, fitted=True)[0], nrow=8)
    recon = grids.reconstruction_grid(model, images[:32], cond=None if cond is None else cond[:32])
    return {
        "reconstructions": grids.save_png(recon, f"{out}/reconstructions.png"),
        "samples": grids.save_png(samples, f"{out}/samples.png"),
        "traversals": grids.save_png(grids.traversal_grid(model, images, dims, cond=cond), f"{out}/traversals.png"),
    }


def trains_against_classifier(cfg) -> bool:
    """Whether the model's objective reads a classifier (the editor's constraint): the demo gives it the guide."""
    constraint = getattr(cfg.model, "constraint", None)
    return bool(constraint is not None and constraint.classifier_weight > 0)


def check_demo_arguments(args: argparse.Namespace) -> None:
    """Refuse impossible settings before anything runs, not ten minutes in at the step that reads them."""
    for flag, value, least in (("--n", args.n, 1), ("--epochs", args.epochs, 1),
                               ("--classifier-epochs", args.classifier_epochs, 1),
                               ("--guide-epochs", args.guide_epochs, 0)):
        if value is not None and value < least:
            raise FacegenError(f"demo: {flag} must be >= {least}, got {value}")
    cfg = load_config(args.config)  # a missing or broken config fails here, not after the classifiers
    if args.guide_epochs == 0 and trains_against_classifier(cfg):
        raise FacegenError(f"demo: {args.config} trains against the guide classifier; --guide-epochs 0 leaves none")


def train_classifiers(args: argparse.Namespace, runs: list[str], timings: dict) -> tuple:
    """The judge (scores every edit; nothing trains or steers against it) and, unless ``--guide-epochs 0``, the
    guide: the same recipe with another seed and no shared weights, which the editor trains against."""
    cfg = load_config(CLASSIFIER_CONFIG, [*runs, f"train.epochs={args.classifier_epochs}"])
    started = _step(f"training the attribute classifier (the judge: scores edits, names latent dimensions; "
                    f"nothing trains against it): {cfg.train.epochs} epochs")
    classifier = fit_current(cfg)
    timings["train_classifier_s"] = time.perf_counter() - started
    if args.guide_epochs == 0:
        return classifier, None
    cfg = load_config(CLASSIFIER_CONFIG, [*runs, f"train.epochs={args.guide_epochs}", f"train.name={GUIDE_NAME}",
                                          "train.seed=1"])
    started = _step(f"training the guide classifier (another seed, never the judge: the editor trains against "
                    f"it, guided edits steer by it): {cfg.train.epochs} epochs")
    guide = fit_current(cfg).bundle
    timings["train_guide_s"] = time.perf_counter() - started
    return classifier, guide


def build_demo(args: argparse.Namespace) -> dict:
    """Every step up to the quality benchmark; returns (and writes to ``OUT/metrics.json``) what it made."""
    check_demo_arguments(args)
    out = os.path.abspath(args.out)
    timings: dict[str, float] = {}
    raw, shards = f"{out}/synth-celeba", f"{out}/shards64"

    started = _step(f"rendering {args.n} synthetic faces (CelebA layout) into {raw}")
    if not fsio.exists(*fsio.resolve(f"{raw}/list_attr_celeba.txt")):
        write_synthetic(raw, n=args.n, seed=0, layout="celeba")
    timings["synth_s"] = time.perf_counter() - started

    started = _step(f"preparing 64x64 Parquet shards in {shards}")
    manifest = write_shards(read_celeba(raw), shards, resolution=64)
    timings["prepare_s"] = time.perf_counter() - started

    runs = [f"data.shards={shards}", f"train.storage_path={out}/runs"]
    init_ray(args.num_cpus)
    classifier, guide = train_classifiers(args, runs, timings)

    overrides = [*runs, *([f"train.epochs={args.epochs}"] if args.epochs else [])]
    cfg = load_config(args.config, overrides)
    against = trains_against_classifier(cfg)
    if against:  # the guide is the constraint's reader; the scores come from the judge, which nothing trains on
        cfg = load_config(args.config, [*overrides, f"model.constraint.classifier={guide}"])
    started = _step(f"training {cfg.family} ({args.config}"
                    f"{': decodes must make the guide read their condition' if against else ''}) with Ray Train: "
                    f"{cfg.train.num_workers} workers, {cfg.train.epochs} epochs")
    result = fit_current(cfg)
    timings["train_s"] = time.perf_counter() - started
    model = load_bundle(result.bundle).model
    conditional = bool(model.condition_attributes())

    started = _step("drawing reconstructions, samples and latent traversals")
    pictures = draw_pictures(model, manifest, out)
    timings["pictures_s"] = time.perf_counter() - started

    started = _step("writing the quality report")
    report_md, _ = build_report(f"{out}/runs", f"{out}/report")
    timings["report_s"] = time.perf_counter() - started

    started = _step("latent analysis: named dimensions, attribute directions, measured edits"
                    + (", the condition combinations its edits land on" if conditional else ""))
    # Beside the bundle, where `facegen analyze` writes by default: the served page reads its edit figures there.
    analysis = analyze(result.bundle, classifier=classifier.bundle, out=beside(result.bundle, "analysis"))
    timings["analysis_s"] = time.perf_counter() - started

    started = _step("quality benchmark: reconstruction, samples and edits against the renderer's counterfactuals"
                    + (f" (condition edits pushed {CONDITION_PUSH:g} past 0 and 1)" if conditional else ""))
    quality = benchmark(out, raw, result.bundle, classifier.bundle, guide=None if conditional else guide,
                        slot_push=CONDITION_PUSH if conditional else 0.0)
    timings["quality_s"] = time.perf_counter() - started

    metrics = {"family": cfg.family, "config": args.config, "conditional": conditional, "bundle": result.bundle,
               "final": result.metrics, "val_recon_mse": result.metrics.get("val/recon_mse_mean_z"),
               "classifier_bundle": classifier.bundle, "guide_bundle": guide,
               "classifier_val_mean_accuracy": classifier.metrics.get("val/mean_accuracy"),
               "timings_s": timings, "pictures": pictures, "report": report_md, "analysis": analysis["md"],
               "analysis_json": analysis["json"], "quality": quality,
               "shards": shards, "out": out, "ray_logs": ray_logs_dir(), "tracking_uri": result.tracking_uri}
    write_metrics(metrics)
    return metrics


def beside(bundle: str, name: str) -> str:
    """The folder ``name`` next to a bundle: where ``facegen analyze`` writes by default and where the served
    page reads the analysis's and the benchmark's figures."""
    return os.path.join(os.path.dirname(bundle.rstrip("/")), name)


def benchmark(out: str, raw: str, bundle: str, classifier: str, guide: str | None = None,
              slot_push: float = 0.0) -> dict:
    """``facegen evaluate`` of a demo model against 32 counterfactual pairs per attribute (with ``guided``
    edits steered by ``guide`` when given, condition edits pushed ``slot_push`` past 0 and 1); returns the
    page's paths and headline figures. The demo's
    classifier judges: no model of the demo trains or steers against it (the full benchmark, bench/quality.sh,
    trains a judge of its own)."""
    counterfactuals = f"{out}/counterfactuals"
    if not fsio.exists(*fsio.resolve(counterfactuals)):
        write_counterfactuals(raw, counterfactuals, n=32, seed=0)
    # Beside the bundle (like the analysis): the served page shows each slider's counterfactual fidelity from it.
    paths = evaluate([bundle], classifier, beside(bundle, "quality"),
                     settings=Settings(n=256, edit_n=32, counterfactuals=counterfactuals, guide=guide,
                                       slot_push=slot_push))
    with open(paths["json"]) as f:
        result = json.load(f)["bundles"][0]
    recon = result.get("reconstruction", {})
    generation = result.get("generation_fitted") or result.get("generation", {})  # what samples.png shows
    rows = result.get("editing", {}).get("rows", [])
    reliable = sorted({row["attribute"] for row in rows if row["method"] != CEILING and meets_editing_target(row)})
    slots = [row["flip_rate"] for row in rows if row["method"] == "slot"]  # a CVAE's condition edits
    # The renderer's edit is the counterfactual itself (fidelity inf, which JSON stores as null)
    attainable = sorted({row["attribute"] for row in rows
                         if row["method"] == CEILING and meets_editing_target({**row, "fidelity_psnr": math.inf})})
    return {"md": paths["md"], "json": paths["json"], "psnr": recon.get("psnr"), "sharpness": recon.get("sharpness"),
            "agreement": recon.get("agreement"),
            "fd": generation.get("fd"), "fd_floor": generation.get("fd_floor"),
            "attribute_tv": generation.get("attribute_tv"), "attribute_tv_floor": generation.get("attribute_tv_floor"),
            "reliable_edits": reliable, "judge_confirms_true_edits": attainable,
            "condition_flip": sum(slots) / len(slots) if slots else None,
            "condition_followed": f"{sum(f >= TARGET_FLIP for f in slots)} of {len(slots)}"}


def write_metrics(metrics: dict) -> str:
    path = f"{metrics['out']}/metrics.json"
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2)
    return path


def print_summary(metrics: dict) -> None:
    print("\nDone.")
    what = "conditional editor" if metrics.get("conditional") else metrics["family"]
    print(f"  model              {what} from {metrics['config']}" + ("  (the demo's default: its edits are the "
          "ones that work at this budget, README \"The demo's model\")" if metrics["config"] == DEFAULT_CONFIG else ""))
    print(f"  model bundle       {metrics['bundle']}")
    print(f"  val recon MSE      {metrics['val_recon_mse']:.5f} (per pixel, [0,1] scale)")
    for name, path in metrics["pictures"].items():
        print(f"  {name:<18} {path}")
    print(f"  quality report     {metrics['report']}")
    print(f"  latent analysis    {metrics['analysis']}")
    q = metrics["quality"]
    print(f"  quality benchmark  {q['md']}")
    print(f"    {what} from {metrics['config']}: PSNR {_fmt(q['psnr'])} dB, sharpness {_fmt(q.get('sharpness'))} "
          f"(1 = as sharp as the test faces), attribute agreement {_fmt(q['agreement'])}, sample Fréchet distance "
          f"{_fmt(q['fd'])} (floor {_fmt(q['fd_floor'])}), attribute TV {_fmt(q['attribute_tv'])} "
          f"(floor {_fmt(q.get('attribute_tv_floor'))})")
    if q.get("condition_flip") is not None:
        print(f"    condition edits (pushed {CONDITION_PUSH:g}) flip {_fmt(q['condition_flip'])} of the time, >= 90% "
              f"on {q['condition_followed']} attributes")
    _print_reliable(q)
    served = metrics.get("served_edit")
    if served:
        print(f"  edit over HTTP     {served['picture']}  ({served.get('method', '')} {served['edit']}: classifier score "
              f"{_fmt(served['scores_before'])} -> {_fmt(served['scores_after'])}; confirmed on "
              f"{served['confirmed']} faces tried)")
        if "counterfactual_psnr" in served:
            print(f"    beside the renderer's counterfactual: edit vs counterfactual {_fmt(served['counterfactual_psnr'])}"
                  f" dB, reconstruction vs original {_fmt(served['reconstruction_psnr'])} dB")
    print(f"  metrics            {metrics['out']}/metrics.json")
    print(f"  Ray's own logs     {metrics['ray_logs']}  (Train workers, Ray Data, Serve replicas)")
    if metrics.get("tracking_uri"):
        print(f"  tracked runs       {ui_command(metrics['tracking_uri'])}  (params, per-epoch metrics, bundles)")


def _print_reliable(q: dict) -> None:
    print(f"    edits meeting the target (flip >= 90%, drift <= 5%, within 2 dB of the counterfactual): "
          f"{', '.join(q['reliable_edits']) or 'none'} (the renderer's own edits meet it, by this judge, on "
          f"{len(q.get('judge_confirms_true_edits', []))})")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def run_demo(args: argparse.Namespace) -> int:
    print_summary(build_demo(args))
    print("\nServe it and edit a face in the browser: make demo (python jobs/demo.py), or "
          "serve run serve/config.yaml with the bundles above.")
    return 0
