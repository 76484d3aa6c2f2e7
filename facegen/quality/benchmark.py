"""``facegen evaluate``: one quality benchmark for every family, on the held-out test split, scored by an
independent judge (an attribute classifier no model trained against, :mod:`facegen.quality.judge`).

Per bundle, by capability (never by family name; :mod:`facegen.quality.sections`, :mod:`facegen.quality.edits`):
the training budget (every bundle); reconstruction, generation and, with counterfactual sets, editing (any
``LatentModel``); categorical-code accuracy (a categorical code part, labelled data); classifier scores (a
model with ``predict_proba``). Writes ``OUT/quality.{md,html,json}`` (:mod:`facegen.quality.tables`) and
sample / reconstruction / edit grids under ``OUT/<run name>/``, beside each bundle's stored result, which a later
evaluation of the same bundle with the same judge, data and settings reuses (:mod:`facegen.quality.resume`).
Runs in-process: no Ray.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from facegen.bundle import Bundle, load_bundle
from facegen.data.shards import read_manifest
from facegen.errors import FacegenError
from facegen.latent import grids
from facegen.models.base import LatentModel
from facegen.quality import edits, resume, sections
from facegen.latent.conditions import ConditionTable
from facegen.latent.guided import Guide, code_scale
from facegen.latent.store import encode_batch
from facegen.quality.judge import Judge, check_independent, load_guide, load_judge, same_location
from facegen.quality.pairs import counterfactual_attributes, find_counterfactuals, read_pairs
from facegen.quality.tables import write_quality


@dataclass
class Settings:
    n: int = 512  # test images (and samples, and training images for the floors and directions)
    fit_n: int = 4000  # training images the ex-post density (their codes) and a CVAE's condition table are fitted on
    edit_n: int = 64  # counterfactual pairs per attribute
    seed: int = 0
    attributes: tuple[str, ...] | None = None  # judged (and edited) attributes; None: all the judge can score
    counterfactuals: str | None = None
    guide: str | None = None  # an attribute classifier bundle steering the ``guided`` edits (never the judge)
    residual: bool = False  # also every edit method composed in pixels (``<method>+residual`` rows)
    read_conditions: bool = False  # a conditional encoder's condition read from each original by the guide, as
    # the service reads uploads with its classifier (default: the true labels)
    slot_push: float = 0.0  # slot edits set the entry this far past the target value (1 + push, or -push)


@dataclass
class Data:
    """One shards folder's evaluation images: up to n rows of the held-out split and of train, and caches of
    the judge's readings of them (shared by the bundles evaluated on it)."""

    shards: str
    manifest: Any
    split: str
    test: dict[str, torch.Tensor]
    train: dict[str, torch.Tensor]
    cache: dict = field(default_factory=dict)

    def fit_rows(self, n: int) -> dict[str, torch.Tensor]:
        """Up to n training rows for fitting a density of the codes (read once, shared by the bundles)."""
        if self.cache.get("fit_rows_n") != n:
            from facegen.data.pipeline import read_examples

            self.cache["fit_rows"] = (self.train if n <= self.train["image"].shape[0]
                                      else read_examples(self.manifest, "train", n))
            self.cache["fit_rows_n"] = n
        return self.cache["fit_rows"]


def load_data(shards: str, n: int) -> Data:
    # Deferred: pipeline.py imports Ray Data (read_examples itself reads in-process and never starts Ray).
    from facegen.data.pipeline import read_examples

    manifest = read_manifest(shards)
    split = "test" if manifest.rows("test") else "val"
    if not manifest.rows(split) or not manifest.rows("train"):
        raise FacegenError(f"{shards}: needs rows in train and in test (or val) to evaluate on")
    test, train = read_examples(manifest, split, n), read_examples(manifest, "train", n)
    if test["image"].shape[0] < 2:
        raise FacegenError(f"{shards}: the {split} split has fewer than 2 readable rows")
    return Data(shards, manifest, split, test, train)


def _say(start: float, message: str) -> None:
    print(f"[evaluate {time.time() - start:6.1f}s] {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


def _train_rows(bundle: Bundle, data: Data) -> tuple[int | None, str]:
    """Training rows of the bundle's own data.shards, else of the evaluation shards (said so), else None."""
    try:
        return read_manifest(bundle.config.data.shards).rows("train"), ""
    except FacegenError:
        if data.shards != bundle.config.data.shards:
            return data.manifest.rows("train"), f"training rows of {data.shards} (data.shards not readable here)"
        return None, ""


def _grid(images: list[torch.Tensor], path: str) -> str:
    return grids.save_png(grids.image_grid(torch.cat(images), nrow=images[0].shape[0]), path)


def evaluate_latent(result: dict, bundle: Bundle, judge: Judge, data: Data, names: list[str], settings: Settings,
                    folder: str, guide: Guide | None = None, say: Callable[[str], None] = _quiet) -> None:
    """Reconstruction, generation, codes and editing of a LatentModel into ``result``; ``say`` hears each step."""
    model: LatentModel = bundle.model
    labels = list(data.manifest.attribute_names)
    torch.manual_seed(settings.seed)
    say("reconstructions")
    result["reconstruction"], recon = sections.reconstruction(model, judge, data.test, labels, names)
    result["pictures"]["reconstructions"] = _grid([data.test["image"][:8], recon[:8]], f"{folder}/reconstructions.png")
    n_samples = min(settings.n, data.train["image"].shape[0])  # as many as the floor's training images
    fit_on = data.fit_rows(settings.fit_n)
    say("samples")
    samples, how = sections.draw_samples(model, n_samples, settings.seed, data.test, fit_on)
    result["generation"] = {"sampler": how, **sections.generation(judge, samples, data.test, data.train, labels,
                                                                  names, data.cache)}
    result["pictures"]["samples"] = grids.save_png(grids.image_grid(samples[:64], nrow=8), f"{folder}/samples.png")
    if not model.needs_fitted_sampler and not model.code_parts():
        # A prior the encoder's codes do not fill leaves holes: the same decoder, fed an ex-post density (a
        # conditional model's decoded under the test rows' conditions, as its prior samples are)
        samples, how = sections.draw_samples(model, n_samples, settings.seed, data.test, fit_on, fitted=True)
        result["generation_fitted"] = {"sampler": how, **sections.generation(
            judge, samples, data.test, data.train, labels, names, data.cache)}
        result["pictures"]["samples_fitted"] = grids.save_png(grids.image_grid(samples[:64], nrow=8),
                                                              f"{folder}/samples_fitted.png")
    result["codes"] = sections.code_accuracy(model, data.test)
    folder_cf = _counterfactuals(data.shards, settings)
    if folder_cf is None:
        result["notes"].append("editing skipped: no counterfactual sets given (--counterfactuals) or found")
        return
    available = [a for a in counterfactual_attributes(folder_cf) if a in names]
    if not available:
        result["notes"].append(f"editing skipped: {folder_cf} holds no set of an attribute judged here")
        return

    def fit():  # called only when a bundle lacks stored directions for an edited attribute
        return edits.fit_for(model, data.train, labels, available)

    def guided():  # the step unit: the spread of this model's training codes
        return edits.Guided(guide, code_scale(encode_batch(model, data.train)))

    named = model.condition_attributes()

    def conditions():  # the condition vectors training faces have (as many as the density sees), over the slots
        attrs = data.fit_rows(settings.fit_n)["attrs"]
        return ConditionTable.fit(named, attrs[:, [labels.index(n) for n in named]])

    levers = edits.Levers(model, bundle.extras, fit, guided if guide is not None else None, settings.residual,
                          conditions if named and set(named) <= set(labels) else None, settings.slot_push)
    rows, grid = [], None
    for i, attribute in enumerate(available):
        say(f"editing {attribute} ({i + 1} of {len(available)})")
        pairs = read_pairs(folder_cf, attribute, settings.edit_n)
        if pairs.originals.shape[0] == 0 or pairs.resolution != data.manifest.resolution:
            result["notes"].append(f"editing {attribute}: skipped ({pairs.originals.shape[0]} pairs at "
                                   f"{pairs.resolution} px; the model works at {data.manifest.resolution} px)")
            continue
        found, images = edits.editing(model, judge, levers, pairs, names,
                                      reader=guide if settings.read_conditions else None)
        rows += found
        if grid is None and images is not None:
            grid = images
            result["pictures"][f"edits ({attribute}, {found[1]['method']})"] = _grid(list(images.values()),
                                                                                     f"{folder}/edits.png")
    result["editing"] = {"counterfactuals": folder_cf, "step": edits.EDIT_STEP, "rows": rows,
                         "directions": dict(levers.sources), "slots": sorted(levers.slots)}


def evaluate_bundle(name: str, location: str, bundle: Bundle, judge: Judge, data: Data, settings: Settings,
                    folder: str, guide: Guide | None = None, say: Callable[[str], None] = _quiet) -> dict:
    """One bundle's results, its pictures written under ``folder``; ``say`` hears each step."""
    started = time.time()
    family = bundle.config.family
    labels = list(data.manifest.attribute_names)
    names = sections.judged_attributes(judge, labels, data.test["attrs"], settings.attributes)
    result: dict[str, Any] = {"name": name, "bundle": location, "family": family,
                              "shards": data.shards, "split": data.split, "n_test": int(data.test["image"].shape[0]),
                              "judged_attributes": names, "notes": [], "pictures": {},
                              "budget": sections.training_budget(bundle.meta, bundle.config,
                                                                 *_train_rows(bundle, data))}
    model, resolution = bundle.model, getattr(bundle.config.model, "resolution", data.manifest.resolution)
    trained_on = bundle.meta.get("dataset", data.manifest.dataset)
    if resolution != data.manifest.resolution or trained_on != data.manifest.dataset:
        result["notes"].append(f"not evaluated: a {resolution} px model of {trained_on} data, but {data.shards} "
                               f"holds {data.manifest.resolution} px {data.manifest.dataset} images")
        return {**result, "classifier": None, "seconds": time.time() - started}
    if not names:
        result["notes"].append("the judge scores none of this data's attributes (none it knows varies in the test "
                               "labels): judge-based metrics are left out")
    if isinstance(model, LatentModel):
        evaluate_latent(result, bundle, judge, data, names, settings, folder, guide, say)
    result["classifier"] = sections.classifier_scores(model, data.test, labels)
    result["seconds"] = time.time() - started
    return result


def _counterfactuals(shards: str, settings: Settings) -> str | None:
    return settings.counterfactuals or find_counterfactuals(shards, read_manifest(shards).resolution)


def evaluate(locations: list[str], judge_location: str, out: str, shards: str | None = None,
             settings: Settings | None = None, fresh: bool = False) -> dict[str, str]:
    """Evaluate the bundles at ``locations`` with the judge at ``judge_location``; write ``out/quality.*``.
    A bundle whose stored result under ``out`` matches (:mod:`facegen.quality.resume`) is not evaluated again
    unless ``fresh``."""
    settings, start = settings or Settings(), time.time()
    judge = load_judge(judge_location)
    unknown = [a for a in settings.attributes or () if a not in judge.attribute_names]
    if unknown:
        raise FacegenError(f"--attributes: the judge does not know {unknown[0]!r} "
                           f"(it knows: {', '.join(judge.attribute_names)})")
    locations = [loc for loc in locations if not same_location(loc, judge_location)]
    if not locations:
        raise FacegenError("no bundle to evaluate (the judge itself is not evaluated)")
    bundles = [(loc, load_bundle(loc)) for loc in locations]
    check_independent(judge_location, bundles)
    guide = load_guide(settings.guide, judge_location) if settings.guide else None
    datasets: dict[str, Data] = {}
    results = []
    names = resume.folder_names([location for location, _ in bundles])
    for name, (location, bundle) in zip(names, bundles):
        source, folder = shards or bundle.config.data.shards, f"{out}/{name}"
        key = resume.result_key(location, judge_location, settings.guide, source,
                                _counterfactuals(source, settings), settings)
        stored = None if fresh else resume.load(folder, key)
        if stored is not None:
            _say(start, f"{name}: {location} is up to date, its stored result reused (--fresh evaluates it again)")
            results.append(stored)
            continue
        if source not in datasets:
            _say(start, f"reading {settings.n} test and train rows of {source}")
            datasets[source] = load_data(source, settings.n)
        _say(start, f"{name} ({bundle.config.family}): {location}")
        resume.forget(folder)
        results.append(evaluate_bundle(name, location, bundle, judge, datasets[source], settings, folder, guide,
                                       say=lambda step, name=name: _say(start, f"{name}: {step}")))
        resume.store(folder, key, results[-1])
    _say(start, f"writing {out}/quality.md")
    return write_quality(results, judge, settings, out)
