"""The benchmark's referee: an attribute classifier bundle that no evaluated model trained against.

A judge reads images of any size (resized, bilinear and antialiased, to its own resolution) and gives
P(attribute present) (N, A) over its attributes (:meth:`Judge.predict_proba`, the
:class:`facegen.latent.scoring.AttributeScorer` protocol) and its penultimate features (N, F): the output of
its convolutional trunk, the input of its linear head (:meth:`Judge.features`), in which Fréchet distances
are measured.

A judge must be independent: a model that used a classifier's trunk as its perceptual loss
(``model.perceptual.path``), as its encoder (``model.encoder_bundle``) or as the reader of its edits
(a CVAE's ``model.constraint.classifier``) has been optimised to look right to
that very network, so scoring it with the same network would flatter it. :func:`check_independent` refuses
that case. (A trained AE bundle records ``encoder_bundle`` as "" once the trunk's weights are baked in, so
only the paths a bundle's config still names can be checked.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from facegen import io as fsio
from facegen.bundle import Bundle, load_bundle
from facegen.errors import FacegenError
from facegen.latent.guided import Guide, guide_from_bundle
from facegen.latent.scoring import AttributeScorer, batched

BATCH = 128


def same_location(a: str, b: str) -> bool:
    """True when two bundle locations name the same folder (local paths resolved, trailing slashes ignored)."""
    if not a or not b:
        return False

    def norm(location: str) -> str:
        fs, path = fsio.resolve(location)
        uri = fsio.to_uri(fs, path)
        return os.path.realpath(uri) if fs.type_name == "local" else uri.rstrip("/")

    return norm(a) == norm(b)


def classifiers_used(bundle: Bundle) -> list[tuple[str, str]]:
    """``[(config key, location)]`` of the classifier bundles a model's config says it trained against."""
    model = bundle.config.model
    used = []
    perceptual = getattr(model, "perceptual", None)
    if perceptual is not None and getattr(perceptual, "source", "") == "bundle" and perceptual.path:
        used.append(("model.perceptual.path", perceptual.path))
    if getattr(model, "encoder_bundle", ""):
        used.append(("model.encoder_bundle", model.encoder_bundle))
    constraint = getattr(model, "constraint", None)  # a CVAE's frozen reader of changed-condition decodes
    if constraint is not None and constraint.classifier_weight and constraint.classifier:
        used.append(("model.constraint.classifier", constraint.classifier))
    return used


def check_independent(judge_location: str, bundles: Iterable[tuple[str, Bundle]]) -> None:
    """Raise FacegenError when the judge is a classifier one of the ``(location, bundle)`` models used."""
    for location, bundle in bundles:
        for key, used in classifiers_used(bundle):
            if same_location(judge_location, used):
                raise FacegenError(f"--judge {judge_location}: is the classifier {location} trained against "
                                   f"({key}); pick a judge no model used (e.g. configs/judge_synth64.yaml)")


class Judge:
    """An attribute classifier model (``predict_proba`` + ``attribute_names`` + ``feature_trunk``) at
    ``location``, fed images resized to ``resolution``."""

    def __init__(self, model: torch.nn.Module, resolution: int, location: str = "", family: str = "") -> None:
        self.model, self.resolution, self.location, self.family = model.eval(), resolution, location, family
        self.trunk = model.feature_trunk()

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(self.model.attribute_names)

    def _sized(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == self.resolution and images.shape[-2] == self.resolution:
            return images
        return F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                             align_corners=False)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) in [-1, 1] -> P(attribute present) (N, A), in ``attribute_names`` order."""
        return batched(lambda x: self.model.predict_proba(self._sized(x)), images, BATCH)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) in [-1, 1] -> the trunk's features (N, F) (what the head reads), float64."""
        return batched(lambda x: self.trunk(self._sized(x)).flatten(1), images, BATCH).double()

    def describe(self) -> str:
        return (f"`{self.location}` ({self.family}, {self.resolution} px, {len(self.attribute_names)} attributes, "
                f"features: its trunk's output)")


def load_judge(location: str) -> Judge:
    """The attribute classifier bundle at ``location`` as a :class:`Judge`; FacegenError for anything else."""
    bundle = load_bundle(location)
    model = bundle.model
    trunk = getattr(model, "feature_trunk", lambda: None)()
    if not isinstance(model, AttributeScorer) or trunk is None:
        raise FacegenError(f"--judge {location}: needs an attribute classifier bundle (predict_proba over named "
                           f"attributes and a feature trunk), got a {bundle.config.family!r} bundle")
    return Judge(model, int(bundle.config.model.resolution), location, bundle.config.family)


def load_guide(location: str, judge_location: str) -> Guide:
    """The attribute classifier bundle at ``location`` as the guide of guided edits; FacegenError when it is the
    judge (an edit steered by the referee would be scored by the network it was optimised against) or not a
    differentiable attribute classifier."""
    if same_location(location, judge_location):
        raise FacegenError(f"--guide {location}: is the judge; guide edits with another classifier "
                           f"(e.g. the demo's classifier bundle)")
    return guide_from_bundle(location)


def judge_columns(judge: AttributeScorer, names: Sequence[str]) -> list[int]:
    """The judge's output columns of ``names`` (each must be one of its attributes)."""
    known = list(judge.attribute_names)
    return [known.index(name) for name in names]
