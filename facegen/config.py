"""Experiment configuration: typed, frozen dataclasses and a strict YAML loader.

A config file has three sections: ``model`` (``family`` picks the model class, the other keys are that
family's own Config), ``data`` (:class:`DataConfig`) and ``train`` (:class:`TrainConfig`).

Every key is checked: an unknown key, a wrong type or a bad value is a :class:`ConfigError` naming the dotted
key (``train.lr: expected float, got 'fast'``). Overrides use the same dotted keys (``train.lr=3e-4``) from
the CLI and from Ray Tune, and their values are parsed as YAML scalars.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from facegen.errors import ConfigError
from facegen.models import family_of, model_config_class

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "eager-backend")  # train.compile


@dataclass(frozen=True)
class DataConfig:
    """Where the training data comes from and how it is fed.

    shards: folder or URI of the Parquet shards written by ``facegen prepare`` (holds ``manifest.json``).
    batch_size: the *global* batch per optimizer step, split evenly over the Train workers, so changing the
        worker count does not change the optimisation.
    hflip: flip training images horizontally with probability 1/2 (deterministic per image and epoch).
    shuffle_buffer: rows in each worker's local shuffle buffer; 0 reads in shard order.
    max_rows: use at most this many rows per split (0 = all); for smoke tests and quick searches.
    cache: ``auto`` decodes the train and val splits once into Ray's object store when they fit in a quarter of
        it (epochs then skip the read tasks: ~10x the images/s); ``always``; ``never`` re-reads every epoch.
    """

    shards: str = "data/shards"
    batch_size: int = 64
    hflip: bool = True
    shuffle_buffer: int = 1024
    max_rows: int = 0
    cache: str = "auto"

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "data.batch_size", "must be positive")
        _check(self.shuffle_buffer >= 0, "data.shuffle_buffer", "must be >= 0")
        _check(self.max_rows >= 0, "data.max_rows", "must be >= 0")
        _check(self.cache in ("auto", "always", "never"), "data.cache", "must be auto, always or never")


@dataclass(frozen=True)
class TrainConfig:
    """How the Ray Train run is executed.

    epochs: passes over the training split.
    lr, betas, weight_decay: AdamW settings shared by every player (GANs may override per player in their
        model config).
    lr_schedule: ``constant``, or ``cosine``: every player's learning rate follows a half cosine from its own
        value at epoch 1 down to ``lr_final_ratio`` of it at the last epoch (set once per epoch, so a resumed
        run continues on the same curve).
    lr_final_ratio: the last epoch's share of the learning rate under ``cosine``.
    num_workers: Ray Train DDP workers; 0 runs the loop in the driver process (no DDP).
    cpus_per_worker: CPUs reserved per worker; fractions let 2 workers and Ray Data share a 2-core laptop.
    use_gpu: GPUs for the workers, NCCL backend, bf16 autocast when ``amp`` is set.
    gpus_per_worker: GPU share per worker when ``use_gpu`` (a fraction packs several Tune trials on a GPU).
    amp, amp_cpu: bf16 autocast on a GPU that does bf16 natively (Ampere or later; fp32 on older ones); and (off
        by default) on a CPU with native bf16 (AVX512-BF16, AMX), where it takes 1.4-1.8x the steps of fp32
        (bench/cpu_bf16.py); ignored on other CPUs (emulated bf16 is slower).
    seed: seeds weights, noise and data order; the same seed reproduces a run, resumed or not.
    max_failures: worker-group restarts Ray Train may do from the latest checkpoint (-1 = unlimited).
    storage_path: folder or URI where Ray Train keeps checkpoints; the run lives in ``storage_path/name``.
    name: run name; re-running with an existing name resumes from its latest checkpoint.
    checkpoints_to_keep: most recent checkpoints kept by Ray Train.
    torch_threads: intra-op threads per worker; 0 (default): ``cpus_per_worker`` rounded up (``loop.worker_threads``).
    compile: the training step through ``torch.compile``: ``off``, or its mode (``default``, ``reduce-overhead``:
        CUDA graphs, 1.9x at batch 256 on an H200, ``max-autotune``), or ``eager-backend`` (tracing only).
    monitor: the reported metric that defines the best epoch, e.g. ``val/loss`` or ``val/mean_accuracy``.
    monitor_mode: ``min`` or ``max``: which direction of ``monitor`` is better.
    early_stopping_patience: stop after this many epochs without a better ``monitor`` (0 = never); the
        exported bundle then holds the best epoch's weights.
    tracking: log the run to MLflow (resolved config, per-epoch metrics, the bundle) and write TensorBoard
        event files to ``storage_path/name/tensorboard``; ``false`` turns both off.
    tracking_uri: the MLflow tracking store; "" is a SQLite store ``storage_path/mlflow.db`` with artefacts in
        ``storage_path/mlartifacts`` (a non-local ``storage_path`` then needs an explicit URI, e.g. a server).
    """

    epochs: int = 10
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_final_ratio: float = 0.02
    num_workers: int = 2
    cpus_per_worker: float = 0.5
    use_gpu: bool = False
    gpus_per_worker: float = 1.0
    amp: bool = True
    amp_cpu: bool = False
    seed: int = 0
    max_failures: int = 2
    storage_path: str = "runs"
    name: str = "run"
    checkpoints_to_keep: int = 2
    torch_threads: int = 0
    compile: str = "off"
    monitor: str = "val/loss"
    monitor_mode: str = "min"
    early_stopping_patience: int = 0
    tracking: bool = True
    tracking_uri: str = ""

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "train.epochs", "must be positive")
        _check(self.lr > 0, "train.lr", "must be positive")
        _check(self.lr_schedule in ("constant", "cosine"), "train.lr_schedule", "must be constant or cosine")
        _check(0 <= self.lr_final_ratio <= 1, "train.lr_final_ratio", "must be in [0, 1]")
        _check(self.num_workers >= 0, "train.num_workers", "must be >= 0")
        _check(self.cpus_per_worker > 0, "train.cpus_per_worker", "must be positive")
        _check(0 < self.gpus_per_worker <= 8, "train.gpus_per_worker", "must be in (0, 8]")
        _check(self.checkpoints_to_keep > 0, "train.checkpoints_to_keep", "must be positive")
        _check(bool(self.name) and "/" not in self.name, "train.name", "must be a non-empty name without '/'")
        _check(self.monitor_mode in ("min", "max"), "train.monitor_mode", "must be min or max")
        _check(self.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0")
        _check(self.torch_threads >= 0, "train.torch_threads", "must be >= 0 (0 derives it from cpus_per_worker)")
        _check(self.compile in COMPILE_MODES, "train.compile", f"must be one of {', '.join(COMPILE_MODES)}")

    def lr_factor(self, epoch: int) -> float:
        """The share of each player's learning rate in (0-based) ``epoch`` under ``lr_schedule``."""
        if self.lr_schedule == "constant" or self.epochs == 1:
            return 1.0
        progress = epoch / (self.epochs - 1)  # 0 at the first epoch, 1 at the last
        return self.lr_final_ratio + (1 - self.lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: ``model`` is the chosen family's own frozen Config dataclass."""

    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def family(self) -> str:
        return family_of(self.model)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-serialisable form; ``from_dict(to_dict(c)) == c``."""
        return {"model": {"family": self.family, **_asdict(self.model)}, "data": _asdict(self.data),
                "train": _asdict(self.train)}


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def _asdict(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from ``values``, checking every key and type; errors name ``prefix.key``."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in known:
            raise ConfigError(f"{prefix}.{key}: unknown key (known: {', '.join(sorted(known))})")
    kwargs = {key: _coerce(value, hints[key], f"{prefix}.{key}") for key, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{prefix}: {exc}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` (int, float, bool, str, tuples, Optional, dataclasses)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads `3e-4` (no dot) as a string; it is what the user meant
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from the plain nested dict of a YAML file or a bundle."""
    if not isinstance(raw, Mapping):
        raise ConfigError("config: expected a mapping with model/data/train sections")
    unknown = set(raw) - {"model", "data", "train"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section (known: data, model, train)")
    model_raw = dict(raw.get("model") or {})
    family = model_raw.pop("family", None)
    if not isinstance(family, str):
        raise ConfigError("model.family: required (e.g. vae, ae)")
    return ExperimentConfig(
        model=build(model_config_class(family), model_raw, "model"),
        data=build(DataConfig, raw.get("data") or {}, "data"),
        train=build(TrainConfig, raw.get("train") or {}, "train"),
    )


def apply_overrides(raw: dict[str, Any], overrides: list[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides applied.

    ``overrides`` is a list of ``"a.b=value"`` strings (values parsed as YAML scalars, so ``1e-3`` is a
    float and ``true`` a bool) or a mapping of dotted keys to already-typed values (Ray Tune's samples).
    """
    out = _deep_copy(raw)
    items = overrides.items() if isinstance(overrides, Mapping) else map(_parse_override, overrides)
    for dotted, value in items:
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{dotted}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.lr=3e-4")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _deep_copy(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _deep_copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_deep_copy(v) for v in node]
    return node


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a plain dict, with one-line errors for missing or malformed files."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
    return raw or {}


def load_config(path: str | Path, overrides: list[str] | Mapping[str, Any] = ()) -> ExperimentConfig:
    """Load ``path`` and apply dotted overrides: the one entry point of jobs, CLI and Tune."""
    return from_dict(apply_overrides(read_yaml(path), overrides))
