"""A run whose settings have changed: resumed when only the model matches, refused or set aside otherwise."""

from __future__ import annotations

import dataclasses
import os

import pytest

from facegen.errors import ConfigError
from facegen.training.checkpoint import TrainingState, save_state
from facegen.training.trainer import check_resumable, set_aside_stale_run
from tests.tiny import tiny_config


def left_run(tmp_path, **train):
    """A run folder as Ray Train leaves it (one checkpoint holding the config it trained), and that config."""
    cfg = tiny_config("vae", train={"storage_path": str(tmp_path), "name": "demo_vae", **train})
    folder = tmp_path / "demo_vae" / "checkpoint_2026-12-03_00-00-00.000000"
    folder.mkdir(parents=True)
    save_state(TrainingState(model={}, optimizers={}, epoch=1, config=cfg.to_dict()), str(folder))
    return cfg


def test_the_same_settings_resume_in_place(tmp_path):
    cfg = left_run(tmp_path)
    check_resumable(cfg)
    assert set_aside_stale_run(cfg) is None
    # Where the run is kept is not what it learns: the same folder named another way, tracking off.
    elsewhere = tiny_config("vae", train={"storage_path": f"{tmp_path}/.", "name": "demo_vae", "tracking": False})
    assert set_aside_stale_run(elsewhere) is None
    assert os.listdir(tmp_path) == ["demo_vae"]


def test_other_training_settings_are_set_aside_never_deleted(tmp_path):
    left_run(tmp_path, epochs=1)
    changed = tiny_config("vae", train={"storage_path": str(tmp_path), "name": "demo_vae", "epochs": 3})
    check_resumable(changed)  # the same model: `facegen train` would go on from the checkpoint
    assert set_aside_stale_run(changed) == str(tmp_path / "demo_vae.previous-1")
    assert sorted(os.listdir(tmp_path)) == ["demo_vae.previous-1"]
    assert os.listdir(tmp_path / "demo_vae.previous-1") == ["checkpoint_2026-12-03_00-00-00.000000"]
    assert set_aside_stale_run(changed) is None  # nothing left to set aside

    left_run(tmp_path, epochs=1)  # a second stale run goes next to the first
    assert set_aside_stale_run(changed) == str(tmp_path / "demo_vae.previous-2")


def test_another_model_is_refused_by_name(tmp_path):
    left_run(tmp_path)
    cfg = tiny_config("vae", train={"storage_path": str(tmp_path), "name": "demo_vae"})
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, latent_dim=16))
    with pytest.raises(ConfigError, match="'demo_vae'.*different model config"):
        check_resumable(wider)
    assert set_aside_stale_run(wider) == str(tmp_path / "demo_vae.previous-1")
