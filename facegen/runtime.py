"""Connecting to Ray: the same code on a laptop (starts a local Ray) and under ``ray job submit``."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

# Ray Data's Parquet footer reader starts 32 actors by default: right for a cluster listing thousands of
# files, wasteful on a laptop listing a handful. Jobs on a cluster may raise it through the environment.
SMALL_MACHINE_ENV = {"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "2"}


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local Ray.

    The console is facegen's: what Ray's processes print (Train controller and workers, Ray Data's plans,
    Serve replicas, raylet/GCS errors) stays in the session's log files (``log_to_driver=False``, see
    ``ray_logs_dir``), and Ray's loggers in this process print warnings only. Training progress reaches the
    console through ``facegen.training.progress``; a failure raises here with the worker's traceback.

    The dashboard stays on even locally: Ray Train V2's placement-group cleaner needs its State API, and
    without it a Tune trial stopped early leaks its resources.
    """
    import ray

    if ray.is_initialized():
        return
    for key, value in SMALL_MACHINE_ENV.items():
        os.environ.setdefault(key, value)
    quiet = {"log_to_driver": False, "logging_config": ray.LoggingConfig(log_level="WARNING")}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=True,
                 runtime_env={"env_vars": {k: os.environ[k] for k in SMALL_MACHINE_ENV}}, **quiet)
    quiet_ray_data_console()
    print(f"[facegen] Ray's own logs: {ray_logs_dir()}", file=sys.stderr, flush=True)


def quiet_ray_data_console() -> None:
    """Ray Data logs its driver-side planning (e.g. the Parquet reader's size estimates) at INFO to both the
    console and ``ray-data.log``: raise only the console handler to WARNING, so the log file keeps everything."""
    import logging

    import ray.data  # noqa: F401  (configures the "ray.data" logger's handlers on import)

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)


def ray_logs_dir() -> str | None:
    """The ``logs`` folder of the Ray session this process is connected to (on the head node), or None."""
    import ray

    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    return os.path.join(context.get_temp_dir(), context.get_session_name(), "logs")


WAIT_ENV = "FACEGEN_WAIT_FOR_NODES_S"  # seconds a job may wait for an autoscaler to add what it lacks (default 0)


@dataclass(frozen=True)
class Demand:
    """What a job needs of the cluster before it starts.

    what: the job, for messages ("train", "tune", "augment").
    bundles: the resource shapes it reserves at once (one per Train worker, actor or trial); each must fit on
        one node, and all together with ``reserve`` on the cluster.
    reserve: what must stay free beside them, e.g. the CPU of Ray Data's read tasks, which Ray schedules
        outside the workers' placement groups (without it the reads wait forever for a CPU).
    why: per resource, where the numbers come from (config keys), to tell the user what to change.
    """

    what: str
    bundles: list[dict[str, float]]
    reserve: dict[str, float] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)

    def total(self) -> dict[str, float]:
        out = dict(self.reserve)
        for bundle in self.bundles:
            for key, value in bundle.items():
                out[key] = out.get(key, 0.0) + value
        return out


def _shortfall(demand: Demand) -> str | None:
    """One sentence naming the first resource ``demand`` lacks on the connected cluster, or None if it fits."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    have = {key: sum(n.get(key, 0.0) for n in nodes) for key in demand.total()}
    for key, need in demand.total().items():
        if need > have[key] + 1e-9:
            return (f"needs {need:g} {key} ({demand.why.get(key, 'its workers')}) but the cluster has "
                    f"{have[key]:g}")
    for bundle in demand.bundles:
        for key, need in bundle.items():
            largest = max((n.get(key, 0.0) for n in nodes), default=0.0)
            if need > largest + 1e-9:
                return (f"needs {need:g} {key} on one node for each worker ({demand.why.get(key, '')}) but the "
                        f"largest node has {largest:g}")
    return None


def require_resources(demand: Demand) -> None:
    """Start only what the cluster can run: raise :class:`FacegenError` (one line naming the missing
    resource) instead of letting Ray wait forever for it.

    A static cluster (a laptop, ``ray start``) fails at once. On an autoscaling cluster set
    ``FACEGEN_WAIT_FOR_NODES_S``: the job asks the autoscaler for the missing shapes and waits that long
    for them, saying so on stderr.
    """
    from facegen.errors import FacegenError

    missing = _shortfall(demand)
    wait_s = float(os.environ.get(WAIT_ENV) or 0)
    if missing and wait_s > 0:
        from ray.autoscaler.sdk import request_resources

        print(f"[facegen] {demand.what} {missing}; asking the autoscaler and waiting up to {wait_s:g} s "
              f"({WAIT_ENV})", file=sys.stderr, flush=True)
        request_resources(bundles=[*demand.bundles, demand.reserve] if demand.reserve else demand.bundles)
        deadline = time.monotonic() + wait_s
        while missing and time.monotonic() < deadline:
            time.sleep(2)
            missing = _shortfall(demand)
        request_resources(bundles=[])  # the job's own reservations keep the nodes from now on
    if missing:
        hint = "" if wait_s > 0 else f"; on an autoscaling cluster set {WAIT_ENV} to wait for new nodes"
        raise FacegenError(f"{demand.what}: {missing}{hint}")
