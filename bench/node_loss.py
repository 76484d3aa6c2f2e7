"""Node loss during training: SIGKILL the node that holds the Train workers mid-epoch; the run restarts its
worker group from the latest checkpoint (on S3) and completes, without redoing a finished epoch.

    flock /tmp/facegen-ray.lock .venv/bin/python bench/node_loss.py [--out out/bench/node_loss]

A ``ray.cluster_utils.Cluster`` on this machine: a head with 0 CPUs (driver, Train controller) and two
1-CPU worker nodes. Checkpoints go to ``s3://`` on a moto S3 server on 127.0.0.1 (the tests' loopback S3),
so they outlive the node. A tiny 2-worker VAE (``cpus_per_worker`` 0.5: both workers on one node, Ray Data's
tasks on the other) trains for ``--epochs``; halfway through the epoch after ``--kill-after-epoch`` the node
holding the workers is removed with SIGKILL and, as an autoscaler would, a fresh node is added. ``fit()`` runs
in a thread; adding and killing nodes must happen on the main thread (Ray installs signal handlers there).

Reported: time from the kill to the new worker group running and to the next finished epoch, the epochs
lost (finished epochs trained twice: 0 expected, only the interrupted epoch's partial work is redone), and
the exported bundle, which must load. Writes ``node_loss.json`` under ``--out``; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_cluster import NODE_OBJECT_STORE, tiny_shards, tiny_train_config  # noqa: E402
from ray.train import UserCallback  # noqa: E402


class EpochLog(UserCallback):
    """On the Train controller: appends ``{"epoch", "t"}`` per report to a local file (same machine)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": int(metrics[0]["epoch"]), "t": time.time()}) + "\n")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start_s3() -> tuple[object, str]:
    """A moto S3 server on 127.0.0.1 and a bucket on it; the AWS env vars point every process at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    bucket = f"facegen-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return server, bucket


def train_workers() -> dict[str, str]:
    """{actor id: node id} of the alive Ray Train workers."""
    from ray.util.state import list_actors

    return {a.actor_id: a.node_id for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if (a.class_name or "").endswith("RayTrainWorker")}


def wait_until(predicate, timeout_s: float, what: str, period_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(period_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/bench/node_loss")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--kill-after-epoch", type=int, default=2)
    parser.add_argument("--images", type=int, default=320)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "epochs.jsonl"
    log.unlink(missing_ok=True)

    import ray
    from ray.cluster_utils import Cluster

    from facegen import io as fsio
    from facegen.bundle import load_bundle
    from facegen.config import load_config
    from facegen.data.shards import read_manifest
    from facegen.training.trainer import build_trainer, export_checkpoint, storage_location

    shards = tiny_shards(out, n=args.images)
    server, bucket = start_s3()
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    config = tiny_train_config(out / "train.yaml", shards, f"s3://{bucket}/runs", "node_loss", epochs=args.epochs,
                               cpus_per_worker=0.5, max_failures=2)
    cfg = load_config(config, [])
    manifest = read_manifest(shards)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True,
                                                            "object_store_memory": 200 * 2 ** 20})
    result: dict = {"storage": storage_location(cfg), "epochs": args.epochs}
    checks: dict[str, bool] = {}
    try:
        nodes = [cluster.add_node(num_cpus=1, object_store_memory=NODE_OBJECT_STORE) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_config=ray.LoggingConfig(log_level="WARNING"))
        trainer = build_trainer(cfg, manifest, callbacks=[EpochLog(str(log))])
        outcome: dict = {}

        def fit() -> None:
            try:
                outcome["result"] = trainer.fit()
            except BaseException as exc:  # reported below; the main thread must not wait forever
                outcome["error"] = exc

        started = time.time()
        thread = threading.Thread(target=fit, daemon=True)
        thread.start()
        k = args.kill_after_epoch
        wait_until(lambda: len(read_log(log)) >= k or "error" in outcome, 300, f"epoch {k}")
        if "error" in outcome:
            raise outcome["error"]
        times = [e["t"] for e in read_log(log)]
        epoch_s = times[-1] - (times[-2] if len(times) > 1 else started)
        time.sleep(epoch_s / 2)  # mid-epoch k + 1
        before = train_workers()
        victim_id = next(iter(before.values()))
        victim = next(n for n in nodes if n.node_id == victim_id)
        reached = read_log(log)[-1]["epoch"]
        killed = time.time()
        cluster.remove_node(victim, allow_graceful=False)  # SIGKILL, as Ray's own tests lose a node
        print(f"killed node {victim_id[:8]} holding {sum(v == victim_id for v in before.values())} workers "
              f"after epoch {reached}, {killed - times[-1]:.1f} s into the next", flush=True)
        cluster.add_node(num_cpus=1, object_store_memory=NODE_OBJECT_STORE)  # the autoscaler's replacement
        def new_group() -> dict[str, str] | None:
            workers = train_workers()
            return workers if len(workers) == 2 and not set(workers) & set(before) else None

        restarted = wait_until(new_group, 300, "new worker group")
        restarted_s = time.time() - killed
        wait_until(lambda: any(e["t"] > killed for e in read_log(log)) or "error" in outcome, 300,
                   "first epoch after the restart")
        next_epoch_s = next(e["t"] for e in read_log(log) if e["t"] > killed) - killed
        thread.join(timeout=600)
        if "error" in outcome:
            raise outcome["error"]
        bundle_dir = fsio.join(storage_location(cfg), cfg.train.name, "bundle")
        bundle, history = export_checkpoint(outcome["result"].checkpoint, manifest, bundle_dir)
        loaded = load_bundle(bundle)
        starts = loaded.meta["starts"]
        epochs = [int(h["epoch"]) for h in history]
        reports = [e["epoch"] for e in read_log(log)]
        result.update(
            killed_after_epoch=reached, seconds_into_next_epoch=round(killed - times[-1], 1),
            epoch_seconds=round(epoch_s, 1), workers_restarted_after_s=round(restarted_s, 1),
            next_epoch_after_s=round(next_epoch_s, 1), resumed_from_epoch=starts[-1], starts=starts,
            finished_epochs_lost=max(0, reached - starts[-1]), reports=reports, history_epochs=epochs,
            new_worker_nodes=sorted(set(restarted.values())), fit_seconds=round(time.time() - started, 1),
            bundle=bundle)
        checks = {"completed": epochs == list(range(1, args.epochs + 1)),
                  "one_restart_from_checkpoint": len(starts) == 2 and starts[-1] >= reached,
                  "no_finished_epoch_repeated": reports.count(reached) == 1 and len(reports) == len(set(reports)),
                  "bundle_loads": loaded.model.latent_width() == 8}
    finally:
        ray.shutdown()
        cluster.shutdown()
        server.stop()
        result["checks"] = checks
        (out / "node_loss.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0 if checks and all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
