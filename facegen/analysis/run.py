"""``facegen analyze`` / ``jobs/analyze.py``: the latent analysis of one generative bundle, as a report.

    facegen analyze --bundle runs/cvae_edit_demo64/bundle --classifier runs/classifier_synth64/bundle

reads ``--n`` training and ``--n-eval`` held-out images of the bundle's shards (or ``--shards``), and writes
``OUT/analysis.md`` (+ ``analysis.json``, ``analysis.html`` and PNGs; OUT defaults to ``analysis/`` beside the
bundle) with: traversals, named dimensions, attribute directions, edit evaluation, disentanglement metrics
against the synthetic ground truth, latent maps and, for an AE, samples of a density of its codes. The fitted directions (and
an AE's sampler) are stored in the bundle's extras, where the edit service and augmentation find them.
No Ray: everything runs in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from facegen import io as fsio
from facegen.analysis import sections as steps
from facegen.analysis.data import load_analysis_data
from facegen.analysis.evaluation import EditPlan, direction_plans, evaluate_edits, evaluation_markdown
from facegen.analysis.judges import PixelProbe, ResizedScorer, SubsetScorer, balanced_accuracy
from facegen.bundle import load_bundle, update_extras
from facegen.data.shards import read_manifest
from facegen.errors import FacegenError
from facegen.latent.edit import latent_slots
from facegen.latent.sampler import fit_density
from facegen.latent.scoring import batched
from facegen.latent.conditions import ConditionTable
from facegen.latent.store import directions_extras, encode_batch
from facegen.models import AttributeClassifier, LatentModel, latent_families
from facegen.reporting.page import Part, write_analysis

def _say(start: float):
    def say(message: str) -> None:
        print(f"[analyze {time.time() - start:6.1f}s] {message}", file=sys.stderr, flush=True)
    return say


def load_latent_bundle(location: str):
    bundle = load_bundle(location)
    if not isinstance(bundle.model, LatentModel):
        raise FacegenError(f"--bundle {location}: a {bundle.config.family!r} bundle is not a latent model "
                           f"(analysis needs one that encodes and decodes: {', '.join(latent_families())})")
    return bundle


def load_scorer(location: str, resolution: int) -> ResizedScorer:
    """The classifier bundle at ``location`` as a scorer of images at ``resolution``."""
    bundle = load_bundle(location)
    if not isinstance(bundle.model, AttributeClassifier):
        raise FacegenError(f"--classifier {location}: needs an attribute classifier bundle (family 'classifier'), "
                           f"got {bundle.config.family!r}")
    return ResizedScorer(bundle.model, bundle.config.model.resolution)


def check_attributes(asked: list[str] | None, names: list[str]) -> None:
    unknown = [a for a in asked or () if a not in names]
    if unknown:
        raise FacegenError(f"--attributes: {unknown[0]!r} is not a labelled attribute that varies in the data "
                           f"(known: {', '.join(names) or 'none'})")


def choose_attributes(ctx: steps.Context, asked: list[str] | None, judges: dict, count: int) -> list[str]:
    """The attributes to evaluate: those asked for (checked), else the ``count`` most balanced ones the
    primary judge knows (a CVAE's condition attributes first: they are its own lever)."""
    names, labels = ctx.data.label_names, ctx.data.test.labels
    if asked:
        return asked
    primary = next(iter(judges.values()))
    prevalence = labels.mean(0).numpy()
    candidates = [a for a in names if a in primary.attribute_names and 0 < prevalence[names.index(a)] < 1]
    slots = [a for a in candidates if a in latent_slots(ctx.model)]
    ranked = sorted(candidates, key=lambda a: -min(prevalence[names.index(a)], 1 - prevalence[names.index(a)]))
    return list(dict.fromkeys(slots + ranked))[:count]


def evaluation(ctx: steps.Context, attributes: list[str] | None, gap_multiple: float, count: int) -> Part:
    part = Part("evaluation", "Edit evaluation (held-out images)")
    data = ctx.data
    if data.train.labels is None or not ctx.directions:
        part.markdown = f"Skipped: edits are judged against binary labels and {data.label_source}."
        part.data["skipped"] = data.label_source
        return part
    with single_threaded():
        probe = PixelProbe.fit(data.train.batch["image"], data.train.labels, data.label_names)
    judges = {**({"classifier": ctx.scorer} if ctx.scorer is not None else {}), "probe": probe}
    recon = batched(ctx.model.decode, ctx.codes_test, 64)
    trust = {name: {"originals": balanced_accuracy(j, data.test.batch["image"], data.test.labels, data.label_names),
                    "reconstructions": balanced_accuracy(j, recon, data.test.labels, data.label_names)}
             for name, j in judges.items()}
    chosen = choose_attributes(ctx, attributes, judges, count)
    slots = latent_slots(ctx.model)
    keep = {a: steps.correlated_attributes(data.train.labels, data.label_names, a) for a in chosen}
    plans = direction_plans(ctx.directions, [a for a in chosen if a not in slots], gap_multiple, keep, ctx.codes_train,
                            data.train.labels, data.label_names)
    if ctx.model.condition_part() is not None:
        own = {a: EditPlan({a: 1.0}, {a: 0.0}, note="condition slot", conditions=ctx.conditions)
               for a in chosen if a in slots}
        if own:
            plans["condition"] = own
    if ctx.setting_scores is not None:
        names = list(ctx.scorer.attribute_names)
        own = {}
        for a in (a for a in chosen if a in names):
            column = ctx.setting_scores[:, names.index(a)]
            up, down = ctx.settings[int(column.argmax())], ctx.settings[int(column.argmin())]
            own[a] = EditPlan(up.request, down.request, note=f"{up.label} / {down.label}")
        plans["codes"] = own
    result = evaluate_edits(ctx.model, data.test.batch["image"], data.test.labels, data.label_names, plans, judges,
                            keep=keep, groups=data.test.groups, group_names=data.group_names, cond=ctx.cond_test,
                            progress=ctx.say)
    part.data.update(result)
    part.data.update({"judge_accuracy": trust, "gap_multiple": gap_multiple, "keep": keep, "n": len(data.test),
                      "group_source": data.group_source})
    mean_acc = {n: {k: float(np.mean(list(v.values()))) if v else None for k, v in t.items()} for n, t in trust.items()}
    lines = [f"{len(data.test)} held-out images, each edited away from its ground-truth label ({data.label_source}) "
             f"along each direction by {gap_multiple:g} times the gap between the two classes' mean training codes along "
             "it (so every method makes a comparable move, capped at 10 standard deviations; conditional: the "
             "boundary direction with the two attributes most correlated with the target projected out, its "
             "`keep` list), or by the "
             "family's own lever (a CVAE's condition slot; an InfoGAN's code setting that raises / lowers the "
             "attribute most on training codes, chosen with the classifier).",
             "",
             "What judges an edit: edited pixels have no ground truth (the generator never rendered them), so a "
             "model that reads images decides. `classifier` is the attribute classifier; `probe` a linear "
             "probe on 12x12 pixels fitted on the ground-truth labels of real training images (independent of the "
             "classifier and the latent model, but weak). Mean balanced accuracy on held-out originals / "
             "reconstructions: " + "; ".join(f"{n} {_pct(a['originals'])} / {_pct(a['reconstructions'])}"
                                            for n, a in mean_acc.items()) + ".",
             "", f"Groups: {data.group_source}.", "", evaluation_markdown(result)]
    part.markdown = "\n".join(lines)
    return part


@contextmanager
def single_threaded():
    """One thread for the small sklearn / L-BFGS / t-SNE problems: on a busy 2-core machine their OpenMP and
    BLAS threads spin against each other (t-SNE of 400 codes: 2 s on one thread, 19 s on two)."""
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def analyze(bundle_path: str, classifier: str | None = None, shards: str | None = None, factors: str | None = None,
            out: str | None = None, n: int = 512, n_eval: int = 128, attributes: list[str] | None = None,
            gap_multiple: float = 1.5, max_attributes: int = 5) -> dict[str, str]:
    """Run every section on one bundle; store directions (and an AE's sampler) in it; returns the report paths."""
    if n < 20 or n_eval < 8:
        raise FacegenError(f"--n must be >= 20 and --n-eval >= 8, got {n} and {n_eval}")
    if not 0 < gap_multiple <= 5:
        raise FacegenError(f"--gap-multiple must be in (0, 5], got {gap_multiple}")
    if out is None and fsio.is_uri(bundle_path):
        raise FacegenError("--out is required when --bundle is a URI (the report is written to a local folder)")
    out = out or os.path.join(os.path.dirname(os.path.abspath(bundle_path)), "analysis")
    if fsio.is_uri(out):
        raise FacegenError(f"--out must be a local folder, got {out}")
    if not fsio.is_uri(bundle_path) and os.path.abspath(out).startswith(os.path.abspath(bundle_path) + os.sep):
        raise FacegenError(f"--out {out} is inside the bundle, which is rewritten when directions are stored")
    start, cpu_start, timings = time.time(), time.process_time(), {}
    say = _say(start)
    torch.manual_seed(0)
    bundle = load_latent_bundle(bundle_path)
    manifest = read_manifest(shards or bundle.config.data.shards)
    resolution = bundle.config.model.resolution
    if manifest.resolution != resolution:
        raise FacegenError(f"{manifest.root}: shards are {manifest.resolution}px but the bundle's model is "
                           f"{resolution}px")
    classifier_model = load_scorer(classifier, resolution) if classifier else None
    data = load_analysis_data(manifest, n, n_eval, factors)
    check_attributes(attributes, data.label_names)
    say(f"read {len(data.train)} training and {len(data.test)} held-out images of {manifest.root}")
    scorer = SubsetScorer(classifier_model, data.label_names) if classifier and data.label_names else classifier_model
    model = bundle.model.eval()
    try:
        codes = [encode_batch(model, split.batch) for split in (data.train, data.test)]
    except ValueError as exc:  # e.g. a CVAE conditioned on attributes, given data without them
        raise FacegenError(f"--bundle {bundle_path}: cannot encode the images of {manifest.root} ({exc})") from None
    ctx = steps.Context(model=model, family=bundle.config.family, data=data, codes_train=codes[0], codes_test=codes[1],
                        cond_test=model.condition_of(data.test.batch), out=out, say=say, scorer=scorer)
    extras = {}
    if model.needs_fitted_sampler:
        ctx.sampler = fit_density(ctx.codes_train)
        extras.update(ctx.sampler.state_dict())
    elif model.condition_part() is None and not model.code_parts():
        # An ex-post density of the codes draws faces where the prior falls into holes the encoder never fills
        # (`facegen evaluate` scores both); the service samples from it when a bundle has one.
        extras.update(fit_density(ctx.codes_train).state_dict())
    named = model.condition_attributes()
    if named and set(named) <= set(manifest.attribute_names):
        # The conditions training faces have: a slot edit (the service's sliders) lands on the nearest of them
        columns = [list(manifest.attribute_names).index(n) for n in named]
        ctx.conditions = ConditionTable.fit(named, data.train.batch["attrs"][:, columns])
        extras.update(ctx.conditions.to_extras())
    if model.code_parts() and scorer is not None:
        ctx.settings = steps.figures.code_settings(model)
        ctx.setting_scores = steps.figures.setting_scores(model, ctx.codes_train[:16], scorer, ctx.settings)
    os.makedirs(out, exist_ok=True)
    parts = []
    sections = [("traversals", lambda: steps.traversals(ctx)), ("naming", lambda: steps.naming(ctx)),
                ("directions", lambda: steps.directions(ctx)),
                ("evaluation", lambda: evaluation(ctx, attributes, gap_multiple, max_attributes)),
                ("disentanglement", lambda: steps.disentanglement(ctx)), ("maps", lambda: steps.maps(ctx))]
    if ctx.sampler is not None:
        sections.append(("sampler", lambda: steps.sampler_part(ctx)))
    for name, run in sections:
        say(name)
        began = time.time()
        with single_threaded() if name in ("directions", "disentanglement", "maps") else nullcontext():
            parts.append(run())
        timings[name] = round(time.time() - began, 2)
        if name == "directions" and (ctx.directions or extras):
            update_extras(bundle_path, {**directions_extras(ctx.directions), **extras})
            stored = [*(f"directions/{m}" for m in ctx.directions), *sorted({k.split("/")[0] for k in extras})]
            say(f"stored {', '.join(stored)} in {bundle_path}")
    timings["total"] = round(time.time() - start, 2)
    timings["cpu_total"] = round(time.process_time() - cpu_start, 2)  # this process; wall time includes waits
    header = {"bundle": f"`{bundle_path}`", "family": ctx.family, "data": f"`{manifest.root}` ({manifest.dataset})",
              "classifier": f"`{classifier}`" if classifier else "none",
              "images": f"{len(data.train)} train, {len(data.test)} {data.test.name}",
              "seconds": f"{timings['total']:.0f}"}
    paths = write_analysis(f"Latent analysis: {ctx.family}", header, parts, out,
                           extra={"bundle": bundle_path, "family": ctx.family, "timings": timings})
    say(f"wrote {paths['md']}")
    return paths


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="a latent-model bundle (ae, vae, cvae, infogan, began); "
                        "its fitted directions (and an AE's sampler) are stored back into it")
    parser.add_argument("--classifier", default=None, help="an attribute classifier bundle (family classifier): "
                        "names dimensions and judges edits (without it naming is skipped)")
    parser.add_argument("--shards", default=None, help="data to analyse (default: the bundle's data.shards)")
    parser.add_argument("--factors", default=None, help="ground-truth factors.parquet (or its folder; default: "
                        "the synthetic dataset the shards were prepared from, when there is one)")
    parser.add_argument("--out", default=None, help="report folder (default: analysis/ beside the bundle)")
    parser.add_argument("--n", type=int, default=512, help="training images to fit and map (default: 512)")
    parser.add_argument("--n-eval", type=int, default=128, help="held-out images to edit (default: 128)")
    parser.add_argument("--attributes", default=None, help="comma-separated attributes to evaluate edits of "
                        "(default: the 5 most balanced the judge knows)")
    parser.add_argument("--gap-multiple", type=float, default=1.5,
                        help="edit size per attribute and method: this multiple of the gap between the two classes' "
                             "mean codes along the direction, in the edit strength's unit (standard deviations of "
                             "the codes along it) and capped at its limit (default: 1.5: a typical negative moves "
                             "past a typical positive)")


def run_analyze(args: argparse.Namespace) -> int:
    attributes = [a.strip() for a in args.attributes.split(",") if a.strip()] if args.attributes else None
    paths = analyze(args.bundle, args.classifier, args.shards, args.factors, args.out, args.n, args.n_eval,
                    attributes, args.gap_multiple)
    print(f"analysis: {paths['md']}\n          {paths['json']}\n          {paths['html']}")
    return 0
