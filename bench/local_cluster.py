"""Pieces the cluster benches share: tiny training data and config, a fake autoscaling cluster built from
``cluster.yaml``, a sampler of node and replica counts, and a teardown that kills only our own processes.

The fake cluster is what ``ray.cluster_utils.AutoscalingCluster`` (Ray's own autoscaler tests) starts: a
``ray start --head --autoscaling-config`` whose monitor runs Ray's ``FakeMultiNodeProvider``, which "launches"
a worker node by starting another raylet on this machine. Two of that class's habits do not fit a shared
box, so the head is started here the same way by hand: its ``start``/``shutdown`` run ``ray stop --force``
(every Ray process of the machine, anyone's), and it reads a ``fake_multi_node/example.yaml`` the Ray 2.60
wheel does not ship (the provider is loaded as an ``external`` provider instead, which needs no defaults file).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
FAKE_HEAD_TYPE = "ray.head.default"  # the provider's own name for the head
NODE_OBJECT_STORE = 150 * 2 ** 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_shards(out: Path, n: int = 160) -> str:
    """32 px Parquet shards of ``n`` synthetic faces (written once; reused when already there)."""
    from facegen.data.celeba import read_celeba
    from facegen.data.shards import write_shards
    from facegen.data.synth import write_synthetic

    shards = out / "shards32"
    if not (shards / "manifest.json").exists():
        write_synthetic(str(out / "synth"), n=n, seed=0, layout="celeba", progress=False)
        write_shards(read_celeba(str(out / "synth")), str(shards), resolution=32, rows_per_shard=40, progress=False)
    return str(shards)


def tiny_train_config(path: Path, shards: str, storage: str, name: str, *, epochs: int, cpus_per_worker: float,
                      max_failures: int = 0, channels: int = 8) -> str:
    """A 2-worker small VAE run (``channels`` in its first layer) as a config YAML (what ``jobs/train.py
    --config`` reads); returns its path."""
    config = {"model": {"family": "vae", "resolution": 32, "latent_dim": 8, "base_channels": channels,
                        "max_channels": 4 * channels},
              "data": {"shards": shards, "batch_size": 16, "shuffle_buffer": 0},
              "train": {"epochs": epochs, "num_workers": 2, "cpus_per_worker": cpus_per_worker, "name": name,
                        "storage_path": storage, "max_failures": max_failures, "tracking": False}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def fake_autoscaling_config(cluster_yaml: str, gcs_address: str, *, cpus_per_node: int, max_nodes: int,
                            idle_timeout_minutes: float) -> dict:
    """``cluster_yaml``'s worker node types (and their min/max counts, capped at ``max_nodes``) on the fake
    provider: ``cpus_per_node`` CPUs and no GPUs each, the head with 0 CPUs so that all work needs workers."""
    source = yaml.safe_load(Path(cluster_yaml).read_text())
    types = {}
    for name, spec in source["available_node_types"].items():
        if name == source["head_node_type"]:
            continue
        types[name] = {"resources": {"CPU": cpus_per_node, "object_store_memory": NODE_OBJECT_STORE},
                       "node_config": {}, "min_workers": int(spec.get("min_workers", 0)),
                       "max_workers": min(int(spec.get("max_workers", max_nodes)), max_nodes)}
    types[FAKE_HEAD_TYPE] = {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}
    return {"cluster_name": source["cluster_name"], "max_workers": min(int(source.get("max_workers", max_nodes)),
                                                                        max_nodes),
            "idle_timeout_minutes": idle_timeout_minutes, "upscaling_speed": 1.0,
            "provider": {"type": "external", "module": FAKE_PROVIDER, "gcs_address": gcs_address,
                         "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True},
            "available_node_types": types, "head_node_type": FAKE_HEAD_TYPE, "auth": {}, "docker": {},
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
            "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
            "worker_start_ray_commands": []}


class FakeAutoscalingCluster:
    """A head node (0 CPUs) whose autoscaler adds and removes fake worker nodes on this machine."""

    def __init__(self, config: dict, temp_dir: str, port: int) -> None:
        self.config, self.temp_dir, self.port = config, temp_dir, port
        self.address = f"127.0.0.1:{port}"
        self.dashboard_port = free_port()

    def start(self, env: dict[str, str]) -> None:
        Path(self.temp_dir).mkdir(parents=True, exist_ok=True)
        config_path = Path(self.temp_dir) / "autoscaling.json"
        config_path.write_text(json.dumps(self.config))
        ray_cli = str(Path(sys.executable).with_name("ray"))
        cmd = [ray_cli, "start", "--head", f"--port={self.port}", "--num-cpus=0", f"--temp-dir={self.temp_dir}",
               f"--autoscaling-config={config_path}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={self.dashboard_port}", "--object-store-memory=200000000",
               "--disable-usage-stats"]
        # As AutoscalingCluster.start: the fake provider refuses to run without RAY_FAKE_CLUSTER, and the
        # autoscaler looks at the cluster every second instead of every five.
        full_env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", **env}
        subprocess.run(cmd, env=full_env, check=True, stdout=subprocess.DEVNULL)

    def own_pids(self) -> list[int]:
        """Processes of this cluster: every Ray process names its session folder, under our own temp dir."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.temp_dir in cmdline:
                pids.append(int(entry.name))
        return pids

    def shutdown(self, grace_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``, to our own processes only; returns how many there were."""
        pids = self.own_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.own_pids():
            time.sleep(0.5)
        for _ in range(10):  # a raylet may still fork a worker while dying: repeat until none is left
            left = self.own_pids()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        return len(pids)


class Sampler:
    """Every ``period_s`` records (seconds since start, alive worker nodes, {deployment: running replicas})."""

    def __init__(self, head_node_id: str, period_s: float = 1.0, app: str | None = None) -> None:
        self.head_node_id, self.period_s, self.app = head_node_id, period_s, app
        self.started = time.monotonic()
        self.samples: list[dict] = []
        self.events: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.serve_on = False

    def now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def event(self, what: str) -> None:
        self.events.append({"t": self.now(), "event": what})
        print(f"[{self.now():7.1f} s] {what}", flush=True)

    def workers(self) -> int:
        import ray

        return sum(1 for n in ray.nodes() if n["Alive"] and n["NodeID"] != self.head_node_id)

    def replicas(self) -> dict[str, int]:
        from ray import serve

        if not self.serve_on:
            return {}
        app = serve.status().applications.get(self.app)
        if app is None:
            return {}
        return {name: d.replica_states.get("RUNNING", 0) for name, d in app.deployments.items()}

    def sample(self) -> None:
        try:
            self.samples.append({"t": self.now(), "workers": self.workers(), "replicas": self.replicas()})
        except Exception as exc:  # a sample lost while Serve starts or stops is no reason to stop sampling
            self.samples.append({"t": self.now(), "error": repr(exc)[:200]})

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.sample()  # the state at the end, after the last wait_for

    def wait_for(self, predicate, timeout_s: float, what: str) -> float:
        """Poll ``predicate()`` until true; returns the seconds it took. Raises TimeoutError naming ``what``."""
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{what}: not reached within {timeout_s:.0f} s")
            time.sleep(1.0)
        return round(time.monotonic() - started, 1)
