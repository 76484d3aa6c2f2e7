"""Model families and their registry. Pure PyTorch: nothing in this package imports Ray.

Adding a family = one file here, one line in ``MODELS``, one config in ``configs/``.
"""

from __future__ import annotations

from typing import Any

from facegen.errors import ConfigError
from facegen.models.ae import Autoencoder
from facegen.models.base import FaceModel, LatentModel, LatentPart, StepOutput
from facegen.models.began import BEGAN
from facegen.models.classifier import AttributeClassifier
from facegen.models.cvae import CVAE
from facegen.models.fairface import FairFaceClassifier
from facegen.models.infogan import InfoGAN
from facegen.models.vae import VAE

MODELS: dict[str, type[FaceModel]] = {
    "ae": Autoencoder,
    "vae": VAE,
    "cvae": CVAE,
    "infogan": InfoGAN,
    "began": BEGAN,
    "classifier": AttributeClassifier,
    "fairface": FairFaceClassifier,
}


def model_class(family: str) -> type[FaceModel]:
    try:
        return MODELS[family]
    except KeyError:
        raise ConfigError(f"model.family: unknown family {family!r} (known: {', '.join(sorted(MODELS))})") from None


def model_config_class(family: str) -> type:
    return model_class(family).config_class


def family_of(config: Any) -> str:
    """The registry name of the family whose Config dataclass ``config`` is."""
    for family, cls in MODELS.items():
        if type(config) is cls.config_class:
            return family
    raise ConfigError(f"model: no family takes a {type(config).__name__}")


def latent_families() -> list[str]:
    """The families that encode and decode (analysis, editing and serving take these)."""
    return [name for name, cls in MODELS.items() if issubclass(cls, LatentModel)]


def build_model(config: Any) -> FaceModel:
    """Instantiate the family whose Config dataclass ``config`` is."""
    return MODELS[family_of(config)](config)


__all__ = ["MODELS", "AttributeClassifier", "FaceModel", "LatentModel", "LatentPart", "StepOutput", "build_model",
           "family_of", "latent_families", "model_class", "model_config_class"]
