"""Connecting to Ray: the same code on a laptop (starts a local Ray) and under ``ray job submit``."""

from __future__ import annotations

import os

# Ray Data's Parquet footer reader starts 32 actors by default: right for a cluster listing thousands of
# files, wasteful on a laptop listing a handful. Jobs on a cluster may raise it through the environment.
SMALL_MACHINE_ENV = {"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "2"}


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local Ray.

    The dashboard stays on even locally: Ray Train V2's placement-group cleaner needs its State API, and
    without it a Tune trial stopped early leaks its resources.
    """
    import ray

    if ray.is_initialized():
        return
    for key, value in SMALL_MACHINE_ENV.items():
        os.environ.setdefault(key, value)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=True,
             runtime_env={"env_vars": {k: os.environ[k] for k in SMALL_MACHINE_ENV}})
