"""What a training run or a search asks of the cluster, checked before anything is started.

Ray itself never refuses work it cannot place: a Train worker group larger than the cluster, or Ray Data's
reads with no CPU left beside the workers, just wait (Train retries its worker group every minute, forever).
These demands let ``facegen.runtime.require_resources`` turn that into one line naming the missing resource.
"""

from __future__ import annotations

from facegen.config import ExperimentConfig
from facegen.runtime import Demand

TRIAL_DRIVER_CPUS = 0.1  # a Tune trial's own process, which builds and fits the trial's TorchTrainer


def ingest_cpus() -> float:
    """CPUs Ray Data's read and decode tasks need beside a run's workers (see ``data.pipeline``)."""
    from facegen.data.pipeline import INGEST_CPUS

    return INGEST_CPUS


def worker_bundle(cfg: ExperimentConfig) -> dict[str, float]:
    """One Train worker's resources."""
    bundle = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        bundle["GPU"] = cfg.train.gpus_per_worker
    return bundle


def _why(cfg: ExperimentConfig, extra_cpu: str = "") -> dict[str, str]:
    workers = max(cfg.train.num_workers, 1)
    return {"CPU": f"train.num_workers={workers} x train.cpus_per_worker={cfg.train.cpus_per_worker:g}"
                   f"{extra_cpu} + {ingest_cpus():g} for Ray Data's reads",
            "GPU": f"train.num_workers={workers} x train.gpus_per_worker={cfg.train.gpus_per_worker:g}"}


def train_demand(cfg: ExperimentConfig) -> Demand:
    """A Ray Train run of ``cfg``: its workers, plus Ray Data's reads beside them."""
    return Demand("train", [worker_bundle(cfg)] * max(cfg.train.num_workers, 1),
                  reserve={"CPU": ingest_cpus()}, why=_why(cfg))


def trial_demand(cfg: ExperimentConfig) -> Demand:
    """One Tune trial of base config ``cfg``: a train run plus the trial's driver (a search needs at least one)."""
    train = train_demand(cfg)
    return Demand("tune", [*train.bundles, {"CPU": TRIAL_DRIVER_CPUS}], reserve=train.reserve,
                  why=_why(cfg, f" + {TRIAL_DRIVER_CPUS:g} for the trial's driver"))
