"""The training harness on a real local Ray cluster: DDP is real, resume is exact, a killed worker recovers.

Every run trains the deterministic tiny autoencoder on 32x32 synthetic faces. With ``data.max_rows`` equal to
the global batch, an epoch is exactly one optimizer step over the same 16 images whatever the worker count,
which is what lets a 2-worker run be compared with a 1-worker run.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from facegen.bundle import load_bundle
from facegen.training.trainer import fit
from tests.tiny import tiny_config

pytestmark = pytest.mark.ray


def run(tiny_shards, tmp_path, name: str, workers: int, epochs: int, rows: int = 16, **train):
    cfg = tiny_config("ae", data={"shards": tiny_shards, "batch_size": 16, "max_rows": rows},
                      train={"num_workers": workers, "epochs": epochs, "name": name,
                             "storage_path": str(tmp_path), "lr": 3e-3, **train})
    result = fit(cfg)
    return result, load_bundle(result.bundle)


@pytest.fixture(scope="module")
def runs(ray_session, tiny_shards, tmp_path_factory):
    """The runs the tests below compare, trained once."""
    storage = tmp_path_factory.mktemp("runs")
    out = {
        "single": run(tiny_shards, storage, "single", workers=1, epochs=3),
        "ddp": run(tiny_shards, storage, "ddp", workers=2, epochs=3),
        "stopped": run(tiny_shards, storage, "resumed", workers=1, epochs=2),
    }
    out["resumed"] = run(tiny_shards, storage, "resumed", workers=1, epochs=3)  # same name: resumes
    return out


def weights(bundle) -> dict[str, torch.Tensor]:
    return bundle.model.state_dict()


def test_ddp_keeps_replicas_identical_every_epoch(runs):
    result, _ = runs["ddp"]
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    assert all(m["sync/param_spread"] == 0.0 for m in result.history)


def test_two_workers_match_one_worker_with_the_same_global_batch(runs):
    single_result, single = runs["single"]
    _, ddp = runs["ddp"]
    for name, value in weights(single).items():
        assert torch.allclose(value, weights(ddp)[name], atol=1e-4, rtol=1e-3), name  # Adam amplifies float noise
    losses = [m["train/loss"] for m in single_result.history]
    assert losses[-1] < losses[0], "the runs compared must actually have trained"
    # The losses each worker saw are all-reduced: the 2-worker run reports the 1-worker run's numbers.
    for a, b in zip(runs["single"][0].history, runs["ddp"][0].history):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)


def test_a_run_stopped_and_resumed_ends_where_an_uninterrupted_run_does(runs):
    _, single = runs["single"]
    stopped_result, _ = runs["stopped"]
    resumed_result, resumed = runs["resumed"]
    assert stopped_result.history[-1]["epoch"] == 2
    assert resumed.meta["starts"] == [0, 2]  # the second fit began at the checkpoint of epoch 2
    assert [m["epoch"] for m in resumed_result.history] == [1, 2, 3]
    for name, value in weights(single).items():
        assert torch.equal(value, weights(resumed)[name]), name


def test_a_killed_worker_is_restarted_from_the_latest_checkpoint(ray_session, tiny_shards, tmp_path):
    from ray.util.state import list_actors

    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(
        out=run(tiny_shards, tmp_path, "chaos", workers=2, epochs=6, rows=128, max_failures=2)))
    thread.start()
    run_dir = tmp_path / "chaos"
    deadline = time.monotonic() + 300
    # Two checkpoints on disk: the first is certainly registered (the second may still be uploading).
    while len(list(run_dir.glob("checkpoint_*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    assert workers, "no live Train worker to kill"
    os.kill(workers[-1].pid, signal.SIGKILL)
    thread.join(timeout=600)
    result, bundle = box["out"]
    assert [m["epoch"] for m in result.history] == [1, 2, 3, 4, 5, 6]
    starts = bundle.meta["starts"]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 1, starts
