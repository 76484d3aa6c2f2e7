"""The training harness on a real local Ray cluster: DDP is real, resume is exact, a killed worker recovers.

Every run trains the deterministic tiny autoencoder on 32x32 synthetic faces. With ``data.max_rows`` equal to
the global batch, an epoch is exactly one optimizer step over the same 16 images whatever the worker count,
which is what lets a 2-worker run be compared with a 1-worker run.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import struct
import threading
import time
from pathlib import Path

import pytest
import torch

from facegen.bundle import load_bundle
from facegen.runtime import ray_logs_dir
from facegen.training.trainer import fit
from tests.tiny import tiny_config

pytestmark = pytest.mark.ray


def run(tiny_shards, tmp_path, name: str, workers: int, epochs: int, rows: int = 16, **train):
    cfg = tiny_config("ae", data={"shards": tiny_shards, "batch_size": 16, "max_rows": rows},
                      train={"num_workers": workers, "epochs": epochs, "name": name,
                             "storage_path": str(tmp_path), "lr": 3e-3, **train})
    result = fit(cfg)
    return result, load_bundle(result.bundle)


def printed_by(*args, **kwargs):
    """(``run(...)``, what it printed on stdout and stderr, the driver's progress thread included)."""
    console = io.StringIO()
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        value = run(*args, **kwargs)
    return value, console.getvalue()


@pytest.fixture(scope="module")
def runs(ray_session, tiny_shards, tmp_path_factory):
    """The runs the tests below compare, trained once (with the console of two of them)."""
    storage = tmp_path_factory.mktemp("runs")
    out = {"single": run(tiny_shards, storage, "single", workers=1, epochs=3)}
    out["ddp"], out["ddp_console"] = printed_by(tiny_shards, storage, "ddp", workers=2, epochs=3)
    out["stopped"] = run(tiny_shards, storage, "resumed", workers=1, epochs=2)
    # Same name: resumes.
    out["resumed"], out["resumed_console"] = printed_by(tiny_shards, storage, "resumed", workers=1, epochs=3)
    return out


def weights(bundle) -> dict[str, torch.Tensor]:
    return bundle.model.state_dict()


def test_ddp_keeps_replicas_identical_every_epoch(runs):
    result, _ = runs["ddp"]
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    assert all(m["sync/param_spread"] == 0.0 for m in result.history)
    assert all(0.0 <= m["train/data_wait_frac"] <= 1.0 for m in result.history)  # the share spent waiting for data


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


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} from the TFRecord event files in ``folder`` (length, crc, Event, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (size,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + size])
            i += 12 + size + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_runs_are_tracked_in_mlflow_and_tensorboard(runs):
    from mlflow import MlflowClient

    from facegen.reporting.report import find_bundles

    result, _ = runs["single"]
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "single"
    assert run.data.params["model.family"] == "ae" and run.data.params["train.epochs"] == "3"
    assert run.data.params["data.batch_size"] == "16"  # the resolved config, not only what the test set
    history = sorted(client.get_metric_history(result.run_id, "train/loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(h["epoch"], h["train/loss"]) for h in result.history]
    assert len(client.get_metric_history(result.run_id, "val/loss")) == 3
    assert {"bundle/meta.json", "bundle/weights.pt"} <= {a.path for a in client.list_artifacts(result.run_id,
                                                                                                "bundle")}
    run_dir = Path(result.bundle).parent
    assert tensorboard_scalars(run_dir / "tensorboard")["train/loss"] == [
        (h["epoch"], pytest.approx(h["train/loss"])) for h in result.history]
    # The bundle copies kept as artefacts are not runs of the report's.
    assert sorted(Path(b).parent.name for b in find_bundles(str(run_dir.parent))) == ["ddp", "resumed", "single"]

    # A resumed run continues its MLflow run: one run, epochs 1-2 from the first fit and 3 from the second.
    stopped, _ = runs["stopped"]
    resumed, _ = runs["resumed"]
    assert stopped.run_id == resumed.run_id
    assert sorted(m.step for m in client.get_metric_history(resumed.run_id, "train/loss")) == [1, 2, 3]
    assert client.get_run(resumed.run_id).data.tags["resumed.train.epochs"] == "3"


EPOCH_LINE = re.compile(r"^\[facegen\] (\S+)  epoch (\d+)/3  train/loss=\S+  val/loss=\S+  \d+ img/s  "
                        r"\d+(m\d\ds|s), ETA \d+(m\d\ds|s)$")


def test_the_console_is_one_line_per_epoch_from_rank_0_and_none_of_rays_internals(runs):
    # Ray's cluster warnings ("(raylet) ...", e.g. on worker counts) may interleave: read facegen's own lines.
    lines = [line for line in runs["ddp_console"].splitlines() if line.startswith("[facegen]")]
    epochs = [EPOCH_LINE.match(line) for line in lines if " epoch " in line]
    assert all(epochs), lines
    assert [(m[1], m[2]) for m in epochs] == [("ddp", "1"), ("ddp", "2"), ("ddp", "3")]  # once, not per worker
    for internal in ("TrainingReport(", "(RayTrainWorker", "(TrainController", "(SplitCoordinator", "Execution plan"):
        assert internal not in runs["ddp_console"]
    # ... they are in the Ray session's logs instead (Ray's cluster warnings, "(raylet) ...", stay on the console).
    worker_logs = Path(ray_logs_dir(), "train").glob("ray-train-app-worker-*.log")
    assert any("TrainingReport(" in path.read_text() for path in worker_logs)
    resumed = [line for line in runs["resumed_console"].splitlines() if line.startswith("[facegen]")]
    assert any(re.match(r"^\[facegen\] resumed: resuming from \S+checkpoint_", line) for line in resumed), resumed
    assert [EPOCH_LINE.match(line)[2] for line in resumed if " epoch " in line] == ["3"]


def train_worker_pids() -> set[int]:
    """PIDs of live Ray Train worker processes, read from /proc: instant, where the state API can lag seconds."""
    pids = set()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):  # a process that ends while we look
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker"):
                pids.add(int(proc.name))
    return pids


def test_a_killed_worker_is_restarted_from_the_latest_checkpoint(ray_session, tiny_shards, tmp_path):
    earlier = train_worker_pids()  # an earlier test's workers may not be reaped yet
    box: dict = {}
    console = io.StringIO()
    epochs = 12

    def train() -> None:
        with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
            box["out"] = run(tiny_shards, tmp_path, "chaos", workers=2, epochs=epochs, rows=128, max_failures=2)

    thread = threading.Thread(target=train)
    thread.start()
    # Killed once the driver has printed epoch 1: the controller registers a checkpoint before it forwards that
    # report, so a restart must resume from it. (A checkpoint folder on disk is not enough: on a loaded machine
    # the controller may not have taken the report in yet, and a restart then begins from scratch.)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and thread.is_alive() and " epoch 1/" not in console.getvalue():
        time.sleep(0.05)
    workers = train_worker_pids() - earlier
    epochs_at_kill = console.getvalue().count(" epoch ")
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(pid, signal.SIGKILL)
    thread.join(timeout=600)
    assert len(workers) == 2, f"expected this run's 2 Train workers, found {sorted(workers)}\n{console.getvalue()}"
    assert 1 <= epochs_at_kill < epochs, f"the kill must land mid-run\n{console.getvalue()}"
    result, bundle = box["out"]
    assert [m["epoch"] for m in result.history] == list(range(1, epochs + 1))
    starts = bundle.meta["starts"]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 1, (starts, console.getvalue())
