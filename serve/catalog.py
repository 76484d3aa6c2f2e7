"""What the ingress knows about the served bundles: editable attributes, directions, priors, conditions.

The generator bundle is loaded once more here, on CPU, because slots, directions and prior codes are
properties of the model that need no batching; the heavy encode/decode work stays in the deployments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from facegen.bundle import load_bundle
from facegen.latent.directions import METHODS
from facegen.latent.conditions import ConditionTable
from facegen.latent.edit import MAX_SLOT_PUSH, MAX_STRENGTH, latent_slots
from facegen.latent.guided import GUIDED
from facegen.latent.sampler import load_sampler
from facegen.latent.store import stored_directions
from facegen.models import AttributeClassifier, LatentModel
from serve.requests import ApiError, get_float
from serve.showcase import load_showcase

MAX_TRAVERSE_ABS = 10.0
# Uploads are face-aligned (serve/showcase.py's frame); with align=false they are centre-cropped to their
# largest square instead. (CelebA's fixed 140 px crop fits only 178x218 aligned frames, not arbitrary photos.)
UPLOAD_CROP = ("full",)
CONDITION_HINT = "0 off, 1 on; past either end the attribute is exaggerated"


@dataclass(frozen=True)
class ConditionSpec:
    """A conditional model's condition: ``size`` entries, named by ``attributes`` (attribute-conditioned CVAE)
    or unnamed (a class one-hot, left all-zero for an upload: the class of a photo is not known)."""

    size: int
    attributes: tuple[str, ...] = ()

    def readable_by(self, catalog: "ModelCatalog") -> bool:
        return all(name in catalog.classifier_attributes for name in self.attributes)

    def from_scores(self, scores: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """(..., A) classifier probabilities -> (..., size) 0/1 conditions."""
        columns = [list(names).index(n) for n in self.attributes]
        return (scores[..., columns] > 0.5).float()


def _classifier_names(location: str | None, role: str) -> tuple[str | None, list[str]]:
    """(run name, attribute names) of the attribute-classifier bundle at ``location``; (None, []) without one."""
    if not location:
        return None, []
    loaded = load_bundle(location)
    if not isinstance(loaded.model, AttributeClassifier):
        raise ValueError(f"{location}: a {loaded.config.family} bundle is not an attribute classifier and cannot "
                         f"{role}")
    return loaded.config.train.name or loaded.config.family, list(loaded.model.attribute_names)


class ModelCatalog:
    """Metadata of the generator bundle (and the attribute names of the classifier and guide bundles, if
    served)."""

    def __init__(self, bundle: str, classifier_bundle: str | None = None, guide_bundle: str | None = None) -> None:
        loaded = load_bundle(bundle)
        if not isinstance(loaded.model, LatentModel):
            raise ValueError(f"{bundle}: a {loaded.config.family} bundle cannot encode and decode; serve an "
                             "ae, vae, cvae, infogan or began bundle")
        self.location, self.generator, self.config, self.meta = bundle, loaded.model, loaded.config, loaded.meta
        self.name = loaded.config.train.name or loaded.config.family
        self.resolution = int(loaded.meta["resolution"])
        self.latent_width = self.generator.latent_width()
        self.directions = {m: d for m in METHODS if (d := stored_directions(loaded.extras, m)) is not None}
        self.sampler = (load_sampler(loaded.extras)
                        if "sampler/mean" in loaded.extras else None)
        self.classifier_name, self.classifier_attributes = _classifier_names(classifier_bundle, "score edits")
        self.guide_name, self.guide_attributes = _classifier_names(guide_bundle, "guide edits")
        self.condition = self._condition_spec()
        self.conditions = ConditionTable.from_extras(loaded.extras)  # stored by `facegen analyze`, else None
        # Held-out faces, training data, measured edit reliability and the face frame uploads are aligned to.
        self.showcase = load_showcase(bundle, loaded.config.data.shards, loaded.meta, self.default_method(),
                                      slots=loaded.model.condition_attributes())

    crop = UPLOAD_CROP

    def _condition_spec(self) -> ConditionSpec | None:
        part = self.generator.condition_part()
        if part is None:
            return None
        return ConditionSpec(part.size, self.generator.condition_attributes())

    def domain(self) -> str:
        """What the generator was trained on, said to the user: a model reproduces faces like its training data,
        and turns anything else (a real photo, for a model trained on synthetic faces) into a blurred guess."""
        dataset = self.meta.get("dataset") or "unnamed"
        return (f"{self.name} was trained on {dataset}-layout faces at {self.resolution} px (the demo's are "
                "synthetic cartoons); photos unlike its training faces come back as the nearest face it knows, "
                "usually blurred.")

    # ---- what can be edited ----

    def methods(self) -> list[str]:
        """Edit methods, the default first (the page preselects it)."""
        if not self.directions:
            return []
        found = [*self.directions, "conditional"]
        return [GUIDED, *found] if self.guided() else found

    def guided(self) -> bool:
        """Whether guided edits are offered: a guide is served, and stored directions give the codes' spread
        (the unit of a guided step)."""
        return bool(self.guide_attributes) and bool(self.directions)

    def default_method(self) -> str:
        # guided when served: it flips the most faces (bench/guided_edits.py, README "Guided edits"). Else
        # mean_diff: boundary normals lean into low-variance latent dimensions the decoder ignores, so their
        # edits barely show (measured by `facegen analyze` on the demo VAE).
        return GUIDED if self.guided() else self.direction_method()

    def direction_method(self) -> str:
        """The stored directions that ``conditional`` projects and that list the editable attributes."""
        return "mean_diff" if "mean_diff" in self.directions else "boundary"

    def code_scale(self) -> torch.Tensor:
        """(D,) standard deviation of the training codes per dimension, from the stored directions' covariance:
        one unit of a guided step, as it is one unit of a direction edit."""
        found = self.directions[self.direction_method()]
        return torch.diagonal(found.cov).clamp(min=0).sqrt().float()

    def directions_for(self, method: str):
        if method in ("conditional", GUIDED):
            return self.directions.get(self.direction_method())
        return self.directions.get(method)

    def editable(self) -> list[dict[str, Any]]:
        """One entry per editable attribute: the model's latent slots, then stored attribute directions."""
        out = []
        conditions = set(self.generator.condition_attributes())
        for name, slot in latent_slots(self.generator).items():
            if slot.kind == "class":
                out.append({"name": name, "kind": "class", "min": 0, "max": slot.size - 1, "step": 1,
                            "default": 0})
            elif name in conditions:  # 0 (off) or 1 (on), pushed past them to exaggerate
                out.append({"name": name, "kind": "value", "min": -MAX_SLOT_PUSH, "max": 1.0 + MAX_SLOT_PUSH,
                            "step": 0.05, "default": 0.0, "hint": CONDITION_HINT})
            else:  # a code
                out.append({"name": name, "kind": "value", "min": -1.0, "max": 1.0, "step": 0.05, "default": 0.0})
        names = {entry["name"] for entry in out}
        found = self.directions.get(self.direction_method())
        for name in (found.names if found else ()):
            if name not in names:
                out.append({"name": name, "kind": "direction", "min": -MAX_STRENGTH, "max": MAX_STRENGTH, "step": 0.1,
                            "default": 0.0})
        return out

    def describe(self) -> dict[str, Any]:
        return {"generator": {"name": self.name, "family": self.config.family, "bundle": self.location,
                              "resolution": self.resolution, "latent_width": self.latent_width,
                              "latent_parts": [vars(p) for p in self.generator.latent_parts],
                              "directions": sorted(self.directions), "sampler": self.sampler is not None,
                              "training": self.showcase.training, "edit_reliability": self.showcase.reliability,
                              "edit_reliability_source": self.showcase.reliability_source,
                              "face_frame": {**vars(self.showcase.frame), "source": self.showcase.frame_source}},
                "classifier": ({"name": self.classifier_name, "attributes": self.classifier_attributes}
                               if self.classifier_name else None),
                "guide": ({"name": self.guide_name, "attributes": self.guide_attributes}
                          if self.guide_name else None)}

    # ---- codes ----

    def prior_codes(self, n: int, seed: int) -> torch.Tensor:
        """(n, D) new codes: from the bundle's stored density of its codes when it has one (an AE needs it; for a VAE
        it is an ex-post density that draws better faces than the prior), else from the model's prior."""
        if self.sampler is not None:
            return self.sampler.sample(n, seed)
        if self.generator.needs_fitted_sampler:
            raise ApiError(409, "no_sampler", "this autoencoder bundle has no fitted sampler; run "
                           "`facegen analyze --bundle ...` once to store one")
        return self.generator.prior_codes(n, torch.Generator().manual_seed(seed))  # a condition part is all-zero

    def check_range(self, value: Any) -> tuple[float, float]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ApiError(400, "bad_field", "'range' must be [low, high]")
        lo, hi = (get_float(v, "range") for v in value)
        if not (lo < hi and max(abs(lo), abs(hi)) <= MAX_TRAVERSE_ABS):
            raise ApiError(400, "out_of_range", f"'range' must have low < high within ±{MAX_TRAVERSE_ABS:g}; "
                           f"got [{lo:g}, {hi:g}]")
        return lo, hi

