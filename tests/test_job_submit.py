"""The README's cluster workflow for real: a ``ray start --head`` with token auth, then prepare -> train ->
analyze submitted with ``ray job submit --working-dir .`` from the repository root, and a job asking for
more than the cluster has failing at once with one ``error:`` line.

One Ray per box: this test brings its own head, so ``conftest.py`` runs it before any test starts the
session's in-process Ray. The head lives in its own temp dir and ports and is shut down by PID.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv: the head's PATH gives jobs this `python` (and `ray`)

pytestmark = pytest.mark.own_cluster


def _our_processes(marker: str) -> list[int]:
    """PIDs of the processes whose command line names ``marker`` (the head's unique temp dir)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
            except OSError:  # gone meanwhile
                pass
    return pids


class Head:
    """A 2-CPU head started with ``ray start --head --block``; ``submit`` runs ``ray job submit`` like the README."""

    def __init__(self) -> None:
        self.temp = tempfile.mkdtemp(prefix="fg-head-", dir="/tmp")  # short: Ray's socket paths have a limit
        self.token = token = Path(self.temp, "auth_token")
        token.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.address = f"http://127.0.0.1:{free_port()}"
        self.log = Path(self.temp, "head.log")
        self.process = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--port=0", "--num-cpus=2", "--num-gpus=0",
             f"--dashboard-port={self.address.rsplit(':', 1)[1]}", f"--temp-dir={self.temp}",
             "--include-dashboard=true", "--disable-usage-stats",
             # Every fixed default port of its own: a Ray lingering on the box must not take the job agent's.
             *(f"--{name}-port={free_port()}" for name in ("ray-client-server", "dashboard-agent-listen",
                                                            "dashboard-agent-grpc", "runtime-env-agent",
                                                            "metrics-export"))],
            env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"ray start exited: {self.log.read_text()[-2000:]}"
            try:
                urllib.request.urlopen(f"{self.address}/api/version", timeout=2)
                return
            except urllib.error.HTTPError:  # 401 without our token: the dashboard is up
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"the head's dashboard did not come up: {self.log.read_text()[-2000:]}")

    def ray(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ray"), *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def submit(self, job_id: str, *command: str) -> subprocess.CompletedProcess:
        """``ray job submit --working-dir .`` from the repository root, exactly as the README says."""
        deadline = time.monotonic() + 60  # the dashboard answers a few seconds before the job agent registers
        while True:
            done = self.ray("job", "submit", "--address", self.address, "--submission-id", job_id,
                            "--working-dir", ".", "--", *command)
            if "No available agent to submit job" not in done.stderr or time.monotonic() > deadline:
                break
            time.sleep(1)
        if "WebSocket connection closed unexpectedly" in done.stderr:
            return self._finish_untailed(job_id, done)
        return done

    def _finish_untailed(self, job_id: str, done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        """``ray job submit`` lost its log tail (a WebSocket drop on a loaded 2-core box, close code 1006): the job
        runs on regardless, so wait for its end over the REST API and read its log, as the README advises."""
        deadline, state = time.monotonic() + 600, "unknown"
        while state not in ("SUCCEEDED", "FAILED", "STOPPED"):
            assert time.monotonic() < deadline, f"{job_id} still {state} after the log tail dropped"
            try:
                state = self.status(job_id)
            except OSError:  # the dashboard that dropped the tail may be slow to answer too
                pass
            time.sleep(2)
        logs = self.ray("job", "logs", "--address", self.address, job_id)
        return subprocess.CompletedProcess(done.args, 0 if state == "SUCCEEDED" else 1,
                                           stdout=done.stdout + logs.stdout, stderr=done.stderr + logs.stderr)

    def status(self, job_id: str) -> str:
        """The job's status from the Jobs REST API (``SUCCEEDED``, ``FAILED``, ...), with the head's token."""
        request = urllib.request.Request(f"{self.address}/api/jobs/{job_id}",
                                         headers={"Authorization": f"Bearer {self.token.read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)["status"]

    def stop(self) -> None:
        """SIGTERM to ``ray start --block`` stops what it started; anything left that names our temp dir
        (a job driver, a worker) is killed by PID. Never ``ray stop``: it would stop every Ray on the box."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for pid in _our_processes(self.temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def head():
    import ray

    assert not ray.is_initialized(), "an in-process Ray is running: this test must run before the session's"
    # A SIGTERM (a CI timeout) must still stop the head: turn it into an exception, so `finally` runs.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = Head()
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)


def _check(done: subprocess.CompletedProcess, head: Head, job_id: str) -> None:
    assert done.returncode == 0, f"{job_id} failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    assert head.status(job_id) == "SUCCEEDED"


def test_readme_cluster_workflow_on_a_real_head(head, synth_celeba, tmp_path):
    shards, runs, analysis = tmp_path / "shards", tmp_path / "runs", tmp_path / "analysis"
    with pytest.raises(urllib.error.HTTPError) as refused:  # token auth is on: no token, no jobs API
        urllib.request.urlopen(f"{head.address}/api/jobs/", timeout=30)
    assert refused.value.code in (401, 403)
    done = head.submit("prepare", "python", "jobs/prepare_data.py", "--dataset", "celeba", "--src", synth_celeba,
                       "--out", str(shards), "--resolution", "32", "--no-progress", "--workers", "1")
    _check(done, head, "prepare")
    assert (shards / "manifest.json").is_file()

    tiny = ["model.resolution=32", "model.latent_dim=8", "model.base_channels=8", "model.max_channels=32",
            f"data.shards={shards}", "data.max_rows=64", "train.epochs=1", f"train.storage_path={runs}",
            "train.name=e2e"]
    done = head.submit("train", "python", "jobs/train.py", "--config", "configs/vae_demo64.yaml", *tiny)
    _check(done, head, "train")
    bundle = runs / "e2e" / "bundle"
    assert (bundle / "weights.pt").is_file() and (bundle / "meta.json").is_file()

    done = head.submit("analyze", "python", "jobs/analyze.py", "--bundle", str(bundle), "--out", str(analysis),
                       "--n", "64", "--n-eval", "16")
    _check(done, head, "analyze")
    assert (analysis / "analysis.md").is_file()

    # A search on the same 2-CPU head: its trial's Ray Data reads get a CPU beside the trial's workers.
    space = tmp_path / "one.tune.yaml"
    space.write_text("metric: val/loss\nmode: min\ngrace_period: 1\nspace:\n  train.lr: {choice: [0.001]}\n")
    done = head.submit("tune", "python", "jobs/tune.py", "--config", "configs/vae_demo64.yaml", *tiny,
                       "train.name=e2e_tune", "--space", str(space), "--num-samples", "1")
    _check(done, head, "tune")
    assert (runs / "e2e_tune-search" / "best_bundle" / "weights.pt").is_file()

    # Asking for more than the 2-CPU head has: a failed job before anything starts, one line naming the CPU.
    done = head.submit("too-big", "python", "jobs/train.py", "--config", "configs/vae_demo64.yaml", *tiny,
                       "train.name=too_big", "train.num_workers=4", "train.cpus_per_worker=1")
    assert done.returncode != 0 and head.status("too-big") == "FAILED"
    # (ray job submit prints the job's log, then its last lines again in the failure's status message)
    errors = {line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")}
    assert errors == {"error: train: needs 4.5 CPU (train.num_workers=4 x train.cpus_per_worker=1 + 0.5 for "
                      "Ray Data's reads) but the cluster has 2; on an autoscaling cluster set "
                      "FACEGEN_WAIT_FOR_NODES_S to wait for new nodes"}
