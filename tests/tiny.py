"""Tiny configs of every registered family, small enough for a CPU test to train in seconds."""

from __future__ import annotations

from facegen.config import ExperimentConfig, from_dict

TINY_MODEL = {
    "ae": {"resolution": 32, "latent_dim": 8, "base_channels": 8, "max_channels": 32},
    "vae": {"resolution": 32, "latent_dim": 8, "base_channels": 8, "max_channels": 32},
    "cvae": {"resolution": 32, "latent_dim": 8, "base_channels": 8, "max_channels": 32,
             "condition_attributes": ["Male", "Smiling"]},
    "infogan": {"resolution": 32, "base_channels": 8, "max_channels": 32, "noise_dim": 8, "categorical": [4],
                "continuous": 2},
    "began": {"resolution": 32, "base_channels": 8, "max_channels": 32, "noise_dim": 8, "categorical": [4],
              "continuous": 2, "hidden_dim": 8},
    "classifier": {"resolution": 32, "backbone": {"base_channels": 8, "max_channels": 32}},
    "fairface": {"resolution": 32, "backbone": {"base_channels": 8, "max_channels": 32}},
}

# Options that change what a family trains (players, losses), named "<family>+<option>"; the registry tests run
# them next to the families. An option that needs a file (a CVAE's constraint classifier) is tested on its own.
TINY_OPTIONS = {
    "cvae+adversary": ("cvae", {"constraint": {"adversary_weight": 1.0}}),
    "infogan+info_in_steps": ("infogan", {"info_in_steps": True}),  # no info player: G and D carry the info loss
    "infogan+real_info": ("infogan", {"real_info": 1.0}),  # the info step also clusters real images
    "vae+attribute_dims": ("vae", {"attribute_dims": ["Male", "Smiling"]}),  # two named latent dimensions
    # a patch critic as a second player
    "ae+adversarial": ("ae", {"adversarial": {"weight": 0.5, "channels": 8}}),
    "vae+adversarial": ("vae", {"adversarial": {"weight": 0.5, "channels": 8}}),
    "cvae+adversarial": ("cvae", {"adversarial": {"weight": 0.5, "channels": 8},  # with the z adversary: 3 players
                                  "constraint": {"adversary_weight": 1.0}}),
    # D judges through DiffAugment; decode reads the generator's running average (no optimizer holds it)
    "infogan+diff_augment+ema": ("infogan", {"diff_augment": ["color", "translation", "cutout"],
                                             "generator_ema": 0.9}),
    "began+diff_augment+ema": ("began", {"diff_augment": ["color", "translation", "cutout"], "generator_ema": 0.9}),
}


def tiny_config(family: str, **sections) -> ExperimentConfig:
    """``family``: a registry name or a :data:`TINY_OPTIONS` name; ``sections`` are extra ``data=``/``train=``
    dicts merged over small defaults."""
    family, option = TINY_OPTIONS.get(family, (family, {}))
    raw = {"model": {"family": family, **TINY_MODEL[family], **option},
           "data": {"batch_size": 8, "shuffle_buffer": 0, **sections.get("data", {})},
           "train": {"epochs": 1, "num_workers": 1, "cpus_per_worker": 0.5, **sections.get("train", {})}}
    return from_dict(raw)
