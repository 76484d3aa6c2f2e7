"""Driver side of training: config -> Ray Data + TorchTrainer -> fit -> model bundle, and ``facegen train``.

``fit`` is what ``jobs/train.py``, ``facegen train`` and the demo call. ``build_trainer`` is separate so
Ray Tune can build the same trainer inside each trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from facegen import io as fsio
from facegen.bundle import write_bundle
from facegen.config import ExperimentConfig, from_dict, load_config
from facegen.data.pipeline import CACHE_SHARE, training_splits
from facegen.data.shards import Manifest, read_manifest
from facegen.errors import ConfigError, FacegenError
from facegen.pretrained import export_config
from facegen.runtime import init_ray, ray_logs_dir, require_resources
from facegen.training import tracking
from facegen.training.checkpoint import STATE_FILE, load_state
from facegen.training.resources import train_demand
from facegen.training.loop import train_loop_per_worker


@dataclass
class FitResult:
    """What a finished run leaves: its final metrics, loss history, checkpoint and exported bundle."""

    metrics: dict[str, float]
    history: list[dict[str, float]]
    checkpoint_path: str
    bundle: str
    tracking_uri: str | None = None  # the MLflow store holding this run (None: tracking off)
    run_id: str | None = None  # the run's MLflow run id


def storage_location(cfg: ExperimentConfig) -> str:
    """Absolute ``storage_path`` (Ray Train wants absolute local paths; URIs pass through; "" is this folder)."""
    return fsio.absolute_path(cfg.train.storage_path or os.curdir)


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
    fs, run_dir = fsio.resolve(fsio.join(storage_location(cfg), cfg.train.name))
    names = sorted(p.split("/")[0] for p in fsio.list_files(fs, run_dir, recursive=True)
                   if p.startswith("checkpoint_") and p.endswith("/" + STATE_FILE))
    return fsio.to_uri(fs, fsio.join(run_dir, names[-1])) if names else None


def saved_config(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The config (as a dict) the run ``storage_path/name`` was trained with, from its latest checkpoint."""
    folder = latest_checkpoint(cfg)
    if folder is None:
        return None
    fs, path = fsio.resolve(folder)
    import io

    import torch

    return torch.load(io.BytesIO(fsio.read_bytes(fs, fsio.join(path, STATE_FILE))), map_location="cpu",
                      weights_only=True)["config"]


def check_resumable(cfg: ExperimentConfig) -> None:
    """A re-used run name resumes its checkpoints, which only works for the same model: say so up front
    instead of failing inside a worker on mismatched weights."""
    saved = saved_config(cfg)
    if saved is not None and saved["model"] != cfg.to_dict()["model"]:
        raise ConfigError(f"train.name: run {cfg.train.name!r} in {storage_location(cfg)} was trained with a "
                          f"different model config; choose another train.name to start afresh")


# Where and how a run is kept, not what it learns: a run moved or renamed is the same run.
KEEPING_FIELDS = ("storage_path", "name", "tracking", "tracking_uri", "checkpoints_to_keep", "max_failures")


def recipe(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parts of a config (as a dict) that decide what a run learns: the model and the training settings."""
    return config["model"], {k: v for k, v in config["train"].items() if k not in KEEPING_FIELDS}


def set_aside_stale_run(cfg: ExperimentConfig) -> str | None:
    """Move the run ``storage_path/name`` to ``<name>.previous-N`` if it was trained with other model or
    training settings than ``cfg`` (resuming would splice two recipes); returns where it went, else None."""
    saved = saved_config(cfg)
    if saved is None or recipe(saved) == recipe(cfg.to_dict()):
        return None
    fs, run_dir = fsio.resolve(fsio.join(storage_location(cfg), cfg.train.name))
    if fsio.is_uri(storage_location(cfg)):  # an object store cannot rename a folder
        raise ConfigError(f"{run_dir}: run {cfg.train.name!r} was trained with other settings; delete it or "
                          f"choose another train.name")
    aside = next(f"{run_dir}.previous-{k}" for k in range(1, 10_000) if not fsio.exists(fs, f"{run_dir}.previous-{k}"))
    fs.move(run_dir, aside)
    return aside


def build_trainer(cfg: ExperimentConfig, manifest: Manifest, *, callbacks: list | None = None,
                  run_name: str | None = None, cache_share: float = CACHE_SHARE):
    """A TorchTrainer for ``cfg`` over the manifest's train and val splits (cached in the object store when
    they fit in ``cache_share`` of it, see ``data.cache``)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from facegen.training.progress import PREFIX

    check_compatible(cfg, manifest)
    datasets, feeding = training_splits(manifest, cfg.data, cache_share)
    print(f"{PREFIX} {run_name or cfg.train.name}: {feeding}", file=sys.stderr, flush=True)
    resources: dict[str, Any] = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = cfg.train.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict()},
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
    with checkpoint.as_directory() as folder:
        state = load_state(folder)
    weights = state.best_model if state.best_model is not None else state.model
    config = json.loads(json.dumps(state.config))
    # A config may name files whose contents the weights now hold (an AE's encoder_bundle, a backbone's
    # weights): the bundle records the architecture instead, so loading it never needs those files.
    trained = from_dict(config)
    config = dataclasses.replace(trained, model=export_config(trained.model)).to_dict()
    meta = bundle_meta(manifest, state.history, state.starts)
    meta["best_epoch"] = state.best_epoch
    write_bundle(dest, config=config, weights=weights, meta=meta)
    return dest, state.history


PORT_RACE_ATTEMPTS = 3


def is_port_race(error: BaseException) -> bool:
    """Ray Train finds the process group's port by binding port 0 and letting it go before torch binds it again;
    a socket opened in between (Ray alone opens dozens) can take it, and the worker group fails to start."""
    return "EADDRINUSE" in str(error)


def retry_port_race(fit: Callable[[], Any], name: str, attempts: int = PORT_RACE_ATTEMPTS) -> Any:
    """``fit()``, started again (on a fresh port) when its worker group lost the rendezvous port race. Nothing
    has trained when that happens, and a start resumes from the run's latest checkpoint anyway."""
    from facegen.training.progress import PREFIX

    for attempt in range(1, attempts):
        try:
            return fit()
        except Exception as error:
            if not is_port_race(error):
                raise
            print(f"{PREFIX} {name}: the process group's port was taken before torch bound it (a Ray Train "
                  f"start-up race); starting again ({attempt + 1}/{attempts})", file=sys.stderr, flush=True)
    return fit()


def train_with_console(cfg: ExperimentConfig, manifest: Manifest, callbacks: list):
    """``fit()`` of the run's TorchTrainer, with facegen's console: a line per epoch (from rank 0's reports,
    printed here on the driver), and where Ray's logs are when it fails."""
    from facegen.training.progress import PREFIX, EpochPrinter  # imports Ray: deferred like the trainer's

    resumed = latest_checkpoint(cfg)
    if resumed:
        print(f"{PREFIX} {cfg.train.name}: resuming from {resumed}", file=sys.stderr, flush=True)
    rows = manifest.rows("train")
    with EpochPrinter(cfg, cfg.train.name, min(rows, cfg.data.max_rows or rows)) as printer:
        try:
            return retry_port_race(lambda: build_trainer(cfg, manifest, callbacks=[*callbacks, printer.callback]).fit(),
                                   cfg.train.name)
        except Exception:
            print(f"{PREFIX} {cfg.train.name}: training failed; the workers' own output is in Ray's logs: "
                  f"{ray_logs_dir()}", file=sys.stderr, flush=True)
            raise


def fit(cfg: ExperimentConfig, manifest: Manifest | None = None) -> FitResult:
    """Train ``cfg`` with Ray Train (resuming ``storage_path/name`` if it exists) and export its bundle."""
    manifest = manifest or read_manifest(cfg.data.shards)
    check_compatible(cfg, manifest)
    check_resumable(cfg)
    require_resources(train_demand(cfg))  # one line naming what is missing, not a worker group waiting forever
    run_dir = fsio.join(storage_location(cfg), cfg.train.name)
    tracker = tracking.open_run(cfg, run_dir, cfg.train.name, tracking.flatten(cfg.to_dict()))
    try:
        result = train_with_console(cfg, manifest, [tracking.epoch_logger(tracker)] if tracker else [])
        if result.checkpoint is None:
            raise FacegenError(f"run {cfg.train.name}: finished without a checkpoint")
        bundle, history = export_checkpoint(result.checkpoint, manifest, fsio.join(run_dir, "bundle"))
    except BaseException:
        tracking.close_run(tracker, failed=True)
        raise
    tracking.close_run(tracker, artefact=bundle)
    return FitResult(metrics=dict(result.metrics or {}), history=history,
                     checkpoint_path=result.checkpoint.path, bundle=bundle,
                     tracking_uri=tracker and tracker.uri, run_id=tracker and tracker.run_id)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML, e.g. configs/vae_synth64.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted config overrides, e.g. train.epochs=5 data.shards=s3://bucket/shards")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs for a local Ray started by this command (ignored when joining a cluster)")
    parser.add_argument("--metrics-out", default=None, help="also write the final metrics as JSON here")


def run_train(args: argparse.Namespace) -> int:
    # Every check that needs no cluster runs before Ray starts, so a mistake costs no start-up time.
    cfg = load_config(args.config, args.overrides)
    manifest = read_manifest(cfg.data.shards)
    check_compatible(cfg, manifest)
    init_ray(args.num_cpus)
    result = fit(cfg, manifest)
    final = {k: round(v, 6) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    print(json.dumps({"bundle": result.bundle, "metrics": final}, indent=2))
    if result.tracking_uri:
        print(f"experiment tracking: {tracking.ui_command(result.tracking_uri)}")
    if args.metrics_out:
        with open(args.metrics_out, "w") as f:
            json.dump({"bundle": result.bundle, "metrics": final, "history": result.history}, f, indent=2)
    return 0
