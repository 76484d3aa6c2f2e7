"""Experiment tracking: every run in an MLflow store (resolved config, per-epoch metrics, the bundle) plus
TensorBoard event files.

The store defaults to SQLite in the runs folder (``storage_path/mlflow.db``, artefacts in
``storage_path/mlartifacts``): MLflow 3.17's file store (``./mlruns``) is in maintenance mode and refuses to
open unless ``MLFLOW_ALLOW_FILE_STORE`` is set, and SQLite is the local store MLflow points to instead.

Who writes what:
- ``facegen train`` (``trainer.fit``): the driver opens the run and logs the params; ``EpochLogger``, a Ray
  Train V2 ``UserCallback``, logs each epoch's rank-0 metrics from the Train controller (which Ray pins to the
  driver's node, so a local store works on a cluster too); the driver logs the bundle and closes the run. A
  resumed run (same ``train.name``) continues its MLflow run.
- ``facegen tune``: the driver opens one run for the search; Ray's own ``MLflowLoggerCallback`` logs every
  trial as a child run of it (``mlflow.parentRunId``) with the trial's sampled values and its reports.
Tracking never stops training: a store that fails mid-run prints one line and stops logging.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from facegen import io as fsio
from facegen.config import ExperimentConfig
from facegen.errors import ConfigError

# MLflow's INFO lines ("Creating initial MLflow database tables...") are its business, not the console's. MLflow
# reads MLFLOW_LOGGING_LEVEL when it is first imported, which happens after this module; a user's setting wins.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

EXPERIMENT = "facegen"
ARTIFACTS = "mlartifacts"  # under storage_path; report.find_bundles skips it (the bundle copies are not runs)
TENSORBOARD = "tensorboard"  # under storage_path/name
RUN_TAG = "facegen.run_dir"  # finds a run's MLflow run again when it resumes
_store_lock = threading.Lock()  # concurrent fits (threads) must not create one SQLite schema twice


@dataclass(frozen=True)
class Tracker:
    """An open MLflow run: where its store is and which run it is."""

    uri: str
    run_id: str
    tensorboard: str | None = None  # local folder for event files, or None

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.uri)


def store_uri(cfg: ExperimentConfig) -> str | None:
    """The tracking store of ``cfg``, or None when tracking is off (or has nowhere local to go)."""
    if not cfg.train.tracking:
        return None
    if cfg.train.tracking_uri:
        return cfg.train.tracking_uri
    storage = fsio.absolute_path(cfg.train.storage_path or ".")
    return None if fsio.is_uri(storage) else f"sqlite:///{storage}/mlflow.db"


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": "0.001"}``: the dotted keys of config overrides."""
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def experiment_id(uri: str, storage: str) -> str:
    """The ``facegen`` experiment of the store, created on first use (artefacts in ``storage/mlartifacts``
    for a local SQLite store; a server keeps its own)."""
    from mlflow import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    with _store_lock:
        client = MlflowClient(uri)  # creates the SQLite schema on first use
        found = client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return found.experiment_id
        local = not fsio.is_uri(storage) and uri.startswith("sqlite:")
        return client.create_experiment(EXPERIMENT, artifact_location=f"{storage}/{ARTIFACTS}" if local else None)


def open_run(cfg: ExperimentConfig, run_dir: str, run_name: str, params: dict[str, str]) -> Tracker | None:
    """Open (or reopen, for a resumed ``run_dir``) the MLflow run of ``run_dir`` and log ``params``.

    MLflow params are write-once: a resumed run logs only new keys, and records changed values (say a larger
    ``train.epochs``) as ``resumed.<key>`` tags."""
    uri = store_uri(cfg)
    if uri is None:
        return None
    from mlflow.entities import Param, RunTag
    from mlflow.tracking.context.registry import resolve_tags

    storage = fsio.absolute_path(cfg.train.storage_path or ".")
    try:
        client = Tracker(uri, "").client()
        exp = experiment_id(uri, storage)
    except Exception as exc:  # a wrong URI or an unreachable server: say so before any training starts
        raise ConfigError(f"train.tracking_uri: cannot open the MLflow store {uri} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); train.tracking=false runs "
                          f"without tracking") from None
    found = client.search_runs([exp], filter_string=f"tags.`{RUN_TAG}` = '{run_dir}'", max_results=1)
    if found:
        run_id, logged = found[0].info.run_id, found[0].data.params
        client.update_run(run_id, status="RUNNING")
    else:
        run = client.create_run(exp, run_name=run_name, tags=resolve_tags({RUN_TAG: run_dir}))
        run_id, logged = run.info.run_id, {}
    new = [Param(k, v) for k, v in params.items() if k not in logged]
    changed = [RunTag(f"resumed.{k}", v) for k, v in params.items() if k in logged and logged[k] != v]
    for i in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=new[i:i + 100])
    if changed:
        client.log_batch(run_id, tags=changed)
    board = None if fsio.is_uri(run_dir) else f"{run_dir}/{TENSORBOARD}"
    return Tracker(uri, run_id, board)


def close_run(tracker: Tracker | None, *, failed: bool = False, artefact: str | None = None,
              artefact_path: str = "bundle") -> None:
    """Log ``artefact`` (a local folder, e.g. the bundle) and mark the run finished or failed."""
    if tracker is None:
        return
    try:
        client = tracker.client()
        if artefact and not fsio.is_uri(artefact):
            client.log_artifacts(tracker.run_id, artefact, artifact_path=artefact_path)
        client.set_terminated(tracker.run_id, status="FAILED" if failed else "FINISHED")
    except Exception as exc:  # the training result stands (or its own error propagates) whatever the store does
        print(f"[facegen] experiment tracking: could not close run {tracker.run_id}: {type(exc).__name__}: {exc}",
              flush=True)


def metric_rows(metrics: dict[str, Any], step: int, timestamp_ms: int) -> list:
    """The numeric reported values as MLflow metrics at ``step`` (the epoch itself is the step)."""
    from mlflow.entities import Metric

    return [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]


def epoch_logger(tracker: Tracker):
    """A Train V2 callback logging each report's rank-0 metrics to ``tracker`` (and TensorBoard)."""
    from ray.train import UserCallback

    class EpochLogger(UserCallback):
        def __init__(self) -> None:
            self.client = self.board = None
            self.stopped = False

        def after_report(self, run_context, metrics, checkpoint):
            if self.stopped or not metrics:
                return
            try:
                self._log(metrics[0])
            except Exception as exc:  # a tracker problem must never fail the training run
                self.stopped = True
                print(f"[facegen] experiment tracking stopped: {type(exc).__name__}: {exc}", flush=True)

        def _log(self, metrics: dict[str, Any]) -> None:
            if self.client is None:  # created here, in the Train controller, not pickled from the driver
                self.client = tracker.client()
                if tracker.tensorboard:
                    from tensorboardX import SummaryWriter

                    self.board = SummaryWriter(tracker.tensorboard)
            step = int(metrics.get("epoch", 0))
            rows = metric_rows(metrics, step, int(time.time() * 1000))
            self.client.log_batch(tracker.run_id, metrics=rows)
            if self.board is not None:
                for row in rows:
                    self.board.add_scalar(row.key, row.value, step)
                self.board.flush()  # the controller exits without a close hook: every epoch is on disk

    return EpochLogger()


def trial_logger(tracker: Tracker):
    """Ray's Tune ``MLflowLoggerCallback``, its trials made child runs of the search's run ``tracker``."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return MLflowLoggerCallback(tracker.uri, experiment_name=EXPERIMENT, tags={MLFLOW_PARENT_RUN_ID: tracker.run_id})


def search_params(cfg: ExperimentConfig, metric: str | dict[str, float], mode: str, num_samples: int,
                  space: dict[str, Any]) -> dict[str, str]:
    """The search run's params: the base config and the search itself (``search.*``)."""
    import json

    return {**flatten(cfg.to_dict()), "search.metric": json.dumps(metric), "search.mode": mode,
            "search.num_samples": str(num_samples), "search.space": json.dumps(space, default=str)}
