"""Ray Tune searches over any family: every trial is a multi-worker Ray Train run of the one harness.

A search space lives beside its config (``configs/vae_synth64.tune.yaml`` next to ``vae_synth64.yaml``) and
uses the config's dotted keys::

    metric: val/loss            # default: the config's train.monitor / train.monitor_mode
    mode: min
    # or a weighted sum of reported metrics, minimised or maximised as `mode` says:
    # metric: {val/recon_mse: 1.0, val/kl: 0.001}
    grace_period: 1             # ASHA: epochs every trial gets before it can be stopped
    space:
      train.lr: {loguniform: [1.0e-4, 3.0e-3]}
      model.beta: {choice: [1.0, 4.0]}

Train V2 runs inside Tune as a function trainable that builds and fits the TorchTrainer (a Trainer object is
no longer a Tune trainable); ``TuneReportCallback`` forwards rank 0's per-epoch metrics and checkpoint path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from facegen.config import ExperimentConfig, apply_overrides, from_dict, read_yaml
from facegen.errors import ConfigError

OBJECTIVE = "objective"  # the reported key a weighted-sum metric is written to

_DOMAINS = ("uniform", "loguniform", "choice", "randint", "grid")


@dataclass(frozen=True)
class SearchSpec:
    """A parsed search-space file: the metric (a name, or weights of a sum), its mode, ASHA's grace period
    and the dotted-key domains (plain ``{kind: args}`` dicts, turned into Tune domains by ``param_space``)."""

    metric: str | dict[str, float]
    mode: str
    grace_period: int
    space: dict[str, dict[str, Any]]

    @property
    def metric_key(self) -> str:
        return self.metric if isinstance(self.metric, str) else OBJECTIVE

    def param_space(self) -> dict[str, Any]:
        from ray import tune

        builders = {"uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
                    "choice": tune.choice, "randint": lambda a: tune.randint(*a), "grid": tune.grid_search}
        return {key: builders[kind](args) for key, domain in self.space.items() for kind, args in domain.items()}


def default_space_path(config_path: str) -> str:
    return config_path[: -len(".yaml")] + ".tune.yaml" if config_path.endswith(".yaml") else config_path


def read_search_spec(path: str, cfg: ExperimentConfig, base_raw: dict[str, Any]) -> SearchSpec:
    """Parse and validate a search-space file; every key and domain is checked against the config."""
    raw = read_yaml(path)
    unknown = set(raw) - {"metric", "mode", "grace_period", "space"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: grace_period, metric, mode, space)")
    space = raw.get("space") or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: `space` must map dotted config keys to domains, e.g. train.lr: {{loguniform: [1e-4, 1e-2]}}")
    for key, domain in space.items():
        if not (isinstance(domain, dict) and len(domain) == 1 and next(iter(domain)) in _DOMAINS):
            raise ConfigError(f"{path}: space.{key}: expected one of {{{', '.join(_DOMAINS)}: ...}}, got {domain!r}")
        kind, args = next(iter(domain.items()))
        examples = args if kind in ("choice", "grid") else args[:1]
        for value in examples:  # a value of the domain must make a valid config, or the trial would die
            from_dict(apply_overrides(base_raw, {key: value}))
    metric = raw.get("metric", cfg.train.monitor)
    if isinstance(metric, dict) and not all(isinstance(w, (int, float)) for w in metric.values()):
        raise ConfigError(f"{path}: metric weights must be numbers")
    mode = raw.get("mode", cfg.train.monitor_mode)
    if mode not in ("min", "max"):
        raise ConfigError(f"{path}: mode must be min or max")
    grace = raw.get("grace_period", 1)
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 1:
        raise ConfigError(f"{path}: grace_period must be a whole number of epochs >= 1, got {grace!r}")
    if grace > cfg.train.epochs:  # ASHA's max_t is train.epochs; Ray would raise deep inside the scheduler
        raise ConfigError(f"{path}: grace_period {grace} exceeds train.epochs={cfg.train.epochs}: no trial "
                          f"could be stopped early; lower grace_period or raise train.epochs")
    return SearchSpec(metric=metric, mode=mode, grace_period=grace, space=space)


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """What one trial takes in total: its Train workers, the trial's driver and its Ray Data reads."""
    from facegen.training.resources import trial_demand

    return trial_demand(cfg).total()


def max_concurrent(cfg: ExperimentConfig, cluster: dict[str, float]) -> int:
    """How many trials fit side by side on the cluster's resources, each with the CPU its Ray Data reads
    need beside its workers (at least one: ``require_resources`` checks that one fits)."""
    need = trial_resources(cfg)
    return max(1, min(math.floor(cluster.get(k, 0) / v) for k, v in need.items() if v > 0))
