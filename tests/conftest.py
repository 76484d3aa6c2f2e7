"""One local Ray cluster for the whole test session (starting Ray costs ~8 s on 2 cores)."""

from __future__ import annotations

import os
import socket

import pytest

# Set before Ray starts so the raylet and every worker inherit them.
os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")


def one_thread():
    """One torch and one BLAS/OpenMP thread (the analysis's own guard): the in-process problems of the tests
    are tiny, and on a shared 2-core box oversubscribed threads run 10-20x slower than one."""
    from facegen.analysis.run import single_threaded

    return single_threaded()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(items):
    """Tests that start their own Ray head (``own_cluster``) run first: one Ray per box, and the session's
    in-process Ray, once started, lives until the end."""
    items.sort(key=lambda item: item.get_closest_marker("own_cluster") is None)  # stable: order otherwise kept


@pytest.fixture(scope="session")
def ray_session():
    """The session's local Ray, started the product's way (``init_ray``: dashboard on, Ray's own output in its
    session logs): 4 logical CPUs on 2 cores so fractional Train workers, Ray Data tasks and Serve replicas can
    be scheduled side by side."""
    import ray

    from facegen.runtime import init_ray

    init_ray(num_cpus=4)  # RAY_DATA_PARQUET_FOOTER_NUM_ACTORS=1 above reaches the workers through it
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_celeba(tmp_path_factory) -> str:
    """A small synthetic dataset in the CelebA layout, rendered once per session."""
    from facegen.data.synth import write_synthetic

    root = str(tmp_path_factory.mktemp("synth") / "celeba")
    write_synthetic(root, n=160, seed=0, layout="celeba", progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_shards(synth_celeba, tmp_path_factory) -> str:
    """32x32 Parquet shards of ``synth_celeba`` (several shards per split, so splits really stream)."""
    from facegen.data.celeba import read_celeba
    from facegen.data.shards import write_shards

    out = str(tmp_path_factory.mktemp("shards") / "celeba32")
    write_shards(read_celeba(synth_celeba), out, resolution=32, rows_per_shard=40, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_fairface_shards(tmp_path_factory) -> str:
    """32x32 shards of a small synthetic dataset in the FairFace layout (race / age / gender labels)."""
    from facegen.data.fairface import read_fairface
    from facegen.data.shards import write_shards
    from facegen.data.synth import write_synthetic

    root = str(tmp_path_factory.mktemp("synth") / "fairface")
    write_synthetic(root, n=120, seed=1, layout="fairface", progress=False)
    out = str(tmp_path_factory.mktemp("shards") / "fairface32")
    write_shards(read_fairface(root), out, resolution=32, progress=False)
    return out
