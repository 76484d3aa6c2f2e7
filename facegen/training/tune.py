"""``jobs/tune.py`` / ``facegen tune``: run (or resume) an ASHA search and export the best trial's bundle."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from facegen import io as fsio
from facegen.config import apply_overrides, from_dict, read_yaml
from facegen.data.pipeline import CACHE_SHARE
from facegen.data.shards import read_manifest
from facegen.errors import FacegenError
from facegen.runtime import init_ray, require_resources
from facegen.training import tracking
from facegen.training.resources import TRIAL_DRIVER_CPUS, trial_demand
from facegen.training.search_space import OBJECTIVE, SearchSpec, default_space_path, max_concurrent, read_search_spec
from facegen.training.trainer import (build_trainer, check_compatible, export_checkpoint, retry_port_race,
                                      storage_location)


def _objective_callback(weights: dict[str, float] | None):
    """Tune's report callback; with ``weights`` it also reports their weighted sum as ``objective``."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class ObjectiveCallback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if weights:
                for rank_metrics in metrics:
                    rank_metrics[OBJECTIVE] = sum(w * rank_metrics[k] for k, w in weights.items())
            super().after_report(run_context, metrics, checkpoint)

    return ObjectiveCallback()


def run_trial(sample: dict[str, Any], base_raw: dict[str, Any], weights: dict[str, float] | None) -> None:
    """One Tune trial: the base config with this trial's sampled values, fitted as a Ray Train run.

    The Train run is named after the trial id, so a trial restarted by ``Tuner.restore`` resumes its own
    checkpoints instead of starting over.
    """
    import ray
    from ray import tune

    cfg = from_dict(apply_overrides(base_raw, sample))
    trial_id = tune.get_context().get_trial_id()
    manifest, name = read_manifest(cfg.data.shards), f"{cfg.train.name}-{trial_id}"
    # Concurrent trials each cache their own splits: they share the object store's caching budget.
    share = CACHE_SHARE / max_concurrent(cfg, ray.cluster_resources())
    retry_port_race(lambda: build_trainer(cfg, manifest, callbacks=[_objective_callback(weights)],
                                          run_name=name, cache_share=share).fit(), name)


def search_folder(cfg) -> tuple[str, str]:
    """(name, folder) of the search of base config ``cfg``: Tune's experiment and its MLflow run."""
    name = f"{cfg.train.name}-search"
    return name, fsio.join(storage_location(cfg), name)


def run_search(base_raw: dict[str, Any], spec: SearchSpec, num_samples: int, resume: bool = False):
    """Run the search (or resume it, with ``Tuner.restore``) and return (ResultGrid, search folder)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    cfg = from_dict(base_raw)
    require_resources(trial_demand(cfg))  # else Tune would queue the first trial forever
    storage = storage_location(cfg)
    name, path = search_folder(cfg)
    weights = spec.metric if isinstance(spec.metric, dict) else None
    trainable = tune.with_resources(tune.with_parameters(run_trial, base_raw=base_raw, weights=weights),
                                    {"CPU": TRIAL_DRIVER_CPUS})
    # The search is one MLflow run, each trial a child run (a resumed search reopens the same run).
    tracker = tracking.open_run(cfg, path, name, tracking.search_params(cfg, spec.metric, spec.mode, num_samples,
                                                                        spec.space))
    if resume and not tune.Tuner.can_restore(path):
        print(f"[facegen] tune: no search state at {path} to resume; starting the search", file=sys.stderr)
    if resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=spec.param_space(),
            tune_config=tune.TuneConfig(
                metric=spec.metric_key, mode=spec.mode, num_samples=num_samples,
                scheduler=ASHAScheduler(max_t=cfg.train.epochs, grace_period=spec.grace_period),
                max_concurrent_trials=max_concurrent(cfg, ray.cluster_resources())),
            run_config=tune.RunConfig(name=name, storage_path=storage,
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      callbacks=[tracking.trial_logger(tracker)] if tracker else []),
        )
    try:
        results = tuner.fit()
    except BaseException:
        tracking.close_run(tracker, failed=True)
        raise
    tracking.close_run(tracker)
    return results, path


def export_best(results, spec: SearchSpec, base_raw: dict[str, Any], dest: str) -> dict[str, Any]:
    """Export the best trial's last checkpoint as a model bundle at ``dest``; returns a summary."""
    from ray.train import Checkpoint


    best = results.get_best_result(metric=spec.metric_key, mode=spec.mode, scope="all")
    if best.metrics is None or "checkpoint_path" not in best.metrics:
        raise FacegenError("the search finished without any checkpointed trial")
    cfg = from_dict(apply_overrides(base_raw, best.config))
    export_checkpoint(Checkpoint(best.metrics["checkpoint_path"]), read_manifest(cfg.data.shards), dest)
    base = from_dict(base_raw)
    name, path = search_folder(base)
    tracking.close_run(tracking.open_run(base, path, name, {}), artefact=dest, artefact_path="best_bundle")
    return {"bundle": dest, "metric": spec.metric_key, "value": best.metrics[spec.metric_key],
            "config": best.config, "trials": len(results), "errors": len(results.errors)}


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML, e.g. configs/vae_synth64.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the base config")
    parser.add_argument("--space", default=None, help="search-space YAML (default: CONFIG with .tune.yaml)")
    parser.add_argument("--num-samples", type=int, default=4, help="trials to sample (default 4)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search (Tuner.restore)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray started by this command")


def run_tune(args: argparse.Namespace) -> int:
    if args.num_samples < 1:
        raise FacegenError("--num-samples must be at least 1")
    base_raw = apply_overrides(read_yaml(args.config), args.overrides)
    cfg = from_dict(base_raw)
    spec = read_search_spec(args.space or default_space_path(args.config), cfg, base_raw)

    check_compatible(cfg, read_manifest(cfg.data.shards))  # before Ray starts: mistakes cost no start-up
    init_ray(args.num_cpus)
    results, path = run_search(base_raw, spec, args.num_samples, resume=args.resume)
    summary = export_best(results, spec, base_raw, fsio.join(path, "best_bundle"))
    print(json.dumps(summary, indent=2, default=str))
    uri = tracking.store_uri(from_dict(base_raw))
    if uri:
        print(f"experiment tracking: {tracking.ui_command(uri)}")
    return 0
