"""The strict config loader: every shipped config loads, and every mistake names its dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from facegen.config import apply_overrides, from_dict, load_config
from facegen.errors import ConfigError

CONFIG_DIR = Path(__file__).parents[1] / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.endswith(".tune.yaml"))
SPACES = sorted(CONFIG_DIR.glob("*.tune.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads_and_round_trips(path):
    cfg = load_config(path)
    assert from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("space", SPACES, ids=[p.stem for p in SPACES])
def test_every_search_space_is_valid_for_its_config(space):
    from facegen.config import read_yaml
    from facegen.training.search_space import read_search_spec

    config_path = space.with_name(space.name.replace(".tune.yaml", ".yaml"))
    cfg = load_config(config_path)
    read_search_spec(str(space), cfg, read_yaml(config_path))  # every domain value makes a valid config


def test_overrides_are_typed_from_yaml_scalars():
    cfg = load_config(CONFIGS[0], ["train.lr=3e-4", "train.use_gpu=true", "data.batch_size=32",
                                   "train.betas=[0.5, 0.9]"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.use_gpu is True
    assert cfg.data.batch_size == 32
    assert cfg.train.betas == (0.5, 0.9)


def test_tune_style_mapping_overrides_do_not_mutate_the_base():
    base = {"model": {"family": "vae"}, "train": {"lr": 0.1}}
    merged = apply_overrides(base, {"train.lr": 0.2, "model.beta": 4.0})
    assert base["train"]["lr"] == 0.1 and merged["train"]["lr"] == 0.2 and merged["model"]["beta"] == 4.0


@pytest.mark.parametrize("raw, message", [
    ({"model": {"family": "nope"}}, "model.family: unknown family 'nope'"),
    ({"model": {}}, "model.family: required"),
    ({"model": {"family": "vae", "latnt_dim": 3}}, "model.latnt_dim: unknown key"),
    ({"model": {"family": "vae"}, "train": {"lr": "fast"}}, "train.lr: expected float, got 'fast'"),
    ({"model": {"family": "vae"}, "train": {"epochs": 2.5}}, "train.epochs: expected int"),
    ({"model": {"family": "vae"}, "train": {"use_gpu": "yes"}}, "train.use_gpu: expected bool"),
    ({"model": {"family": "vae"}, "train": {"epochs": 0}}, "train.epochs: must be positive"),
    ({"model": {"family": "vae", "resolution": 48}}, "model.resolution: must be one of"),
    ({"model": {"family": "vae"}, "optim": {}}, "optim: unknown section"),
    ({"model": {"family": "vae"}, "data": [1, 2]}, "data: expected a mapping"),
    ({"model": {"family": "vae"}, "train": {"lr_schedule": "step"}}, "train.lr_schedule: must be constant or"),
])
def test_bad_configs_fail_with_one_line_naming_the_key(raw, message):
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  family: [vae\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(CONFIGS[0], ["train.lr"])


def test_a_cosine_schedule_runs_from_the_full_rate_to_its_final_ratio():
    import math

    cfg = from_dict({"model": {"family": "vae"}, "train": {"epochs": 5, "lr_schedule": "cosine",
                                                            "lr_final_ratio": 0.1}})
    factors = [cfg.train.lr_factor(e) for e in range(5)]
    assert factors[0] == 1.0 and math.isclose(factors[-1], 0.1) and math.isclose(factors[2], 0.55)
    assert all(a > b for a, b in zip(factors, factors[1:]))
    assert from_dict({"model": {"family": "vae"}, "train": {"epochs": 5}}).train.lr_factor(3) == 1.0


def test_each_epoch_sets_every_players_rate_from_its_own_initial_rate():
    import torch

    from facegen.training.loop import set_epoch_lr

    cfg = from_dict({"model": {"family": "vae"}, "train": {"epochs": 3, "lr_schedule": "cosine",
                                                            "lr_final_ratio": 0.0}})
    weights = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizers = {"g": torch.optim.AdamW([weights[0]], lr=1e-3), "d": torch.optim.AdamW([weights[1]], lr=2e-4)}
    set_epoch_lr(optimizers, cfg, 1)
    assert [o.param_groups[0]["lr"] for o in optimizers.values()] == [0.5e-3, 1e-4]
    restored = torch.optim.AdamW([weights[0]], lr=1e-3)  # a resumed run: the checkpoint holds initial_lr
    restored.load_state_dict(optimizers["g"].state_dict())
    set_epoch_lr({"g": restored}, cfg, 2)
    assert restored.param_groups[0]["lr"] == 0.0 and restored.param_groups[0]["initial_lr"] == 1e-3
