"""Driver side of training: config -> Ray Data + TorchTrainer -> fit -> model bundle.

``fit`` is what ``jobs/train.py``, ``facegen train`` and the demo call. ``build_trainer`` is separate so
Ray Tune can build the same trainer inside each trial.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from facegen.bundle import write_bundle
from facegen.config import ExperimentConfig
from facegen.data import fsutil
from facegen.data.pipeline import load_split
from facegen.data.shards import Manifest, read_manifest
from facegen.errors import ConfigError, FacegenError
from facegen.training.checkpoint import STATE_FILE, load_state


@dataclass
class FitResult:
    """What a finished run leaves: its final metrics, loss history, checkpoint and exported bundle."""

    metrics: dict[str, float]
    history: list[dict[str, float]]
    checkpoint_path: str
    bundle: str


def storage_location(cfg: ExperimentConfig) -> str:
    """Absolute ``storage_path`` (Ray Train wants absolute local paths; URIs pass through)."""
    path = cfg.train.storage_path
    return path if fsutil.is_uri(path) else os.path.abspath(path)


def check_compatible(cfg: ExperimentConfig, manifest: Manifest) -> None:
    """Catch config/data mismatches on the driver, before any worker starts."""
    if getattr(cfg.model, "resolution", manifest.resolution) != manifest.resolution:
        raise ConfigError(f"model.resolution: {cfg.model.resolution} but the shards in {cfg.data.shards} are "
                          f"{manifest.resolution}px; prepare shards at that resolution or change the config")
    workers = max(cfg.train.num_workers, 1)
    if cfg.data.batch_size % workers:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is not divisible by train.num_workers={workers}")
    for split in ("train", "val"):
        if manifest.rows(split) == 0:
            raise FacegenError(f"{cfg.data.shards}: the {split} split is empty")


def latest_checkpoint(cfg: ExperimentConfig) -> str | None:
    """The newest ``checkpoint_*`` folder of the run ``storage_path/name``, if the run exists."""
    fs, run_dir = fsutil.resolve(fsutil.join(storage_location(cfg), cfg.train.name))
    names = sorted(p.split("/")[0] for p in fsutil.list_files(fs, run_dir, recursive=True)
                   if p.startswith("checkpoint_") and p.endswith("/" + STATE_FILE))
    return fsutil.to_uri(fs, fsutil.join(run_dir, names[-1])) if names else None


def check_resumable(cfg: ExperimentConfig) -> None:
    """A re-used run name resumes its checkpoints, which only works for the same model: say so up front
    instead of failing inside a worker on mismatched weights."""
    folder = latest_checkpoint(cfg)
    if folder is None:
        return
    fs, path = fsutil.resolve(folder)
    import io

    import torch

    saved = torch.load(io.BytesIO(fsutil.read_bytes(fs, fsutil.join(path, STATE_FILE))), map_location="cpu",
                       weights_only=True)["config"]
    if saved["model"] != cfg.to_dict()["model"]:
        raise ConfigError(f"train.name: run {cfg.train.name!r} in {storage_location(cfg)} was trained with a "
                          f"different model config; choose another train.name to start afresh")


def build_trainer(cfg: ExperimentConfig, manifest: Manifest, *, callbacks: list | None = None,
                  run_name: str | None = None):
    """A TorchTrainer for ``cfg`` over the manifest's train and val splits."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from facegen.training.loop import train_loop_per_worker

    check_compatible(cfg, manifest)
    limit = cfg.data.max_rows
    datasets = {split: load_split(manifest, split, max_rows=limit) for split in ("train", "val")}
    train_rows = min(manifest.rows("train"), limit) if limit else manifest.rows("train")
    resources: dict[str, Any] = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = cfg.train.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        # Live per-batch bars only for a person at a terminal; logs get one line per epoch.
        train_loop_config={"config": cfg.to_dict(), "train_rows": train_rows, "progress": sys.stdout.isatty()},
        scaling_config=ScalingConfig(num_workers=max(cfg.train.num_workers, 1), use_gpu=cfg.train.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name or cfg.train.name,
            storage_path=storage_location(cfg),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep),
            callbacks=callbacks or [],
        ),
        datasets=datasets,
    )


def bundle_meta(manifest: Manifest, history: list[dict[str, float]], starts: list[int]) -> dict[str, Any]:
    return {
        "dataset": manifest.dataset,
        "resolution": manifest.resolution,
        "attribute_names": list(manifest.attribute_names),
        "label_names": {k: list(v) for k, v in manifest.label_names.items()},
        "metrics": history[-1] if history else {},
        "history": history,
        "starts": starts,
    }


def export_checkpoint(checkpoint, manifest: Manifest, dest: str) -> tuple[str, list[dict[str, float]]]:
    """Turn a training checkpoint into a model bundle at ``dest``; returns (dest, loss history)."""
    import dataclasses

    from facegen.config import from_dict

    with checkpoint.as_directory() as folder:
        state = load_state(folder)
    weights = state.best_model if state.best_model is not None else state.model
    config = json.loads(json.dumps(state.config))
    resolved = from_dict(config)
    # A model config may name files whose contents the weights now hold (the AE's encoder_bundle): its
    # for_export() says what the bundle records instead, so loading the bundle never needs those files.
    if hasattr(resolved.model, "for_export"):
        config = dataclasses.replace(resolved, model=resolved.model.for_export()).to_dict()
    backbone = config["model"].get("backbone")
    if isinstance(backbone, dict) and backbone.get("weights"):
        backbone["weights"] = ""  # the pretrained file is baked into the weights now; don't need it to load
    meta = bundle_meta(manifest, state.history, state.starts)
    meta["best_epoch"] = state.best_epoch
    write_bundle(dest, config=config, weights=weights, meta=meta)
    return dest, state.history


def fit(cfg: ExperimentConfig, manifest: Manifest | None = None) -> FitResult:
    """Train ``cfg`` with Ray Train (resuming ``storage_path/name`` if it exists) and export its bundle."""
    manifest = manifest or read_manifest(cfg.data.shards)
    check_compatible(cfg, manifest)
    check_resumable(cfg)
    result = build_trainer(cfg, manifest).fit()
    if result.checkpoint is None:
        raise FacegenError(f"run {cfg.train.name}: finished without a checkpoint")
    bundle_dest = fsutil.join(storage_location(cfg), cfg.train.name, "bundle")
    bundle, history = export_checkpoint(result.checkpoint, manifest, bundle_dest)
    return FitResult(metrics=dict(result.metrics or {}), history=history,
                     checkpoint_path=result.checkpoint.path, bundle=bundle)
