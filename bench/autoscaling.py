"""Autoscaling from zero: cluster.yaml's node types on Ray's fake multi-node provider, a 2-worker training
job and a Serve load burst, with the node and replica counts recorded over time.

    flock /tmp/facegen-ray.lock .venv/bin/python bench/autoscaling.py [--out out/bench/autoscaling]

The head has 0 CPUs, so every task needs a worker node, and worker nodes start at 0 (``min_workers`` of
``cluster.yaml``). Scaled to a 2-core machine: each fake node has 1 CPU and no GPU, at most 3 of them, and an
idle timeout of 15 s instead of ``cluster.yaml``'s 10 minutes. Phases:

1. ``ray job submit`` (the Jobs API) of ``jobs/train.py`` for a tiny 2-worker VAE: the autoscaler adds nodes,
   the job completes, and the nodes go away after the idle timeout.
2. The editing service from ``serve/config.yaml`` (its replica bounds; ``downscale_delay_s`` shortened to
   ``--downscale-delay-s`` and ``target_ongoing_requests`` lowered from 16 to ``--target-ongoing``, since
   2 cores cannot send the load that 16 waiting requests per replica means) on the trained bundle (a 32 px
   VAE, wide enough that the model calls and not the ingress take the time): nodes come back for the
   replicas, a burst of concurrent requests raises the model deployments' replicas within
   ``[min_replicas, max_replicas]``, they fall back when idle, and after ``serve.shutdown()`` the nodes go
   away again.

Writes ``autoscaling.json`` (samples, events, figures) and ``nodes.png`` under ``--out``; exits 1 if a phase
did not behave (job failed, no scale-up, bounds broken, no scale-down).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_cluster import (ROOT, FakeAutoscalingCluster, Sampler, fake_autoscaling_config,  # noqa: E402
                                 free_port, tiny_shards, tiny_train_config)

FAKE_HEAD_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"
MODEL_DEPLOYMENTS = ("Encoder", "Decoder")


def train_phase(cluster: FakeAutoscalingCluster, sampler: Sampler, out: Path, args) -> dict:
    from ray.job_submission import JobStatus, JobSubmissionClient

    shutil.rmtree(out / "runs", ignore_errors=True)  # a run of the same name would resume, not scale
    config = tiny_train_config(out / "train.yaml", tiny_shards(out), str(out / "runs"), "autoscale_vae",
                               epochs=args.epochs, cpus_per_worker=1, channels=32)
    client = JobSubmissionClient(f"http://127.0.0.1:{cluster.dashboard_port}")
    env = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180", "FACEGEN_WAIT_FOR_NODES_S": "180",
           "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    job = client.submit_job(entrypoint=f"{sys.executable} jobs/train.py --config {config}",
                            runtime_env={"working_dir": str(ROOT), "env_vars": env})
    sampler.event(f"train job {job} submitted (0 worker nodes)")
    submitted = sampler.now()
    status = client.get_job_status(job)
    while not status.is_terminal():
        time.sleep(2)
        status = client.get_job_status(job)
    finished = sampler.now()
    (out / "train_job.log").write_text(client.get_job_logs(job))
    sampler.event(f"train job {status.value}")
    during = [s["workers"] for s in sampler.samples if submitted <= s["t"] <= finished and "workers" in s]
    idle_s = sampler.wait_for(lambda: sampler.workers() == 0, args.idle_timeout_s + 120, "nodes removed after training")
    sampler.event(f"all worker nodes removed {idle_s:.0f} s after the job")
    bundle = out / "runs" / "autoscale_vae" / "bundle"
    return {"status": status.value, "submitted_t": submitted, "finished_t": finished,
            "seconds": round(finished - submitted, 1), "max_worker_nodes": max(during, default=0),
            "scale_down_after_s": idle_s, "bundle": str(bundle), "ok": status == JobStatus.SUCCEEDED}


def serving_config_for(bundle: str, port: int, downscale_delay_s: float, target_ongoing: float | None) -> dict:
    """serve/config.yaml on ``bundle`` (no classifier: the tiny run trained none), its replica bounds kept,
    the downscale delay (and the target of ongoing requests per replica, if given) scaled to this machine."""
    from serve.launch import serving_config

    config = serving_config(bundle=bundle, no_classifier=True, host="127.0.0.1", port=port)
    app = config["applications"][0]
    app["deployments"] = [d for d in app["deployments"] if d["name"] != "Classifier"]
    for deployment in app["deployments"]:
        if "autoscaling_config" in deployment:
            deployment["autoscaling_config"]["downscale_delay_s"] = downscale_delay_s
            if target_ongoing:
                deployment["autoscaling_config"]["target_ongoing_requests"] = target_ongoing
    return config


async def burst(url: str, seconds: float, concurrency: int) -> dict[str, int]:
    """``concurrency`` clients posting ``/v1/reconstruct`` back to back for ``seconds``; status counts."""
    import httpx
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), (150, 110, 90)).save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "align": False}  # no face to find in it
    counts: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            try:
                status = str((await http.post(url + "/v1/reconstruct", json=body)).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            counts[status] = counts.get(status, 0) + 1

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return counts


def serve_phase(sampler: Sampler, args, bundle: str) -> dict:
    from ray import serve

    from serve.launch import facegen_app, start_serving

    config = serving_config_for(bundle, free_port(), args.downscale_delay_s, args.target_ongoing)
    app = facegen_app(config)
    scaled = {d["name"]: d["autoscaling_config"] for d in app["deployments"] if "autoscaling_config" in d}
    bounds = {name: (policy["min_replicas"], policy["max_replicas"]) for name, policy in scaled.items()}
    sampler.app, sampler.serve_on = app["name"], True
    sampler.event("serve deploy (serve/config.yaml)")
    deployed = sampler.now()
    url = start_serving(config)
    sampler.event(f"serving at {url}")
    before = sampler.replicas()
    sampler.event(f"load burst: {args.concurrency} clients for {args.burst_s:.0f} s")
    started = sampler.now()
    counts = asyncio.run(burst(url, args.burst_s, args.concurrency))
    sampler.event(f"burst over: {counts}")
    ended = sampler.now()
    peak = {name: max((s["replicas"].get(name, 0) for s in sampler.samples if started <= s["t"] and "replicas" in s),
                      default=0) for name in bounds}

    def at_min() -> bool:
        now = sampler.replicas()
        return all(now.get(name, 0) <= lo for name, (lo, _) in bounds.items())

    fallback_s = sampler.wait_for(at_min, args.downscale_delay_s + 240, "replicas back to min_replicas")
    sampler.event(f"replicas back to min_replicas {fallback_s:.0f} s after the burst")
    everything = [s["replicas"].get(n, 0) for s in sampler.samples if "replicas" in s for n in bounds]
    serve.shutdown()
    sampler.serve_on = False
    shutdown = sampler.now()
    sampler.event("serve shut down")
    idle_s = sampler.wait_for(lambda: sampler.workers() == 0, args.idle_timeout_s + 120, "nodes removed after Serve")
    sampler.event(f"all worker nodes removed {idle_s:.0f} s after Serve stopped")
    within = all(bounds[n][0] <= peak[n] <= bounds[n][1] for n in bounds) and max(everything, default=0) <= max(
        hi for _, hi in bounds.values())
    return {"autoscaling_config": scaled, "deployed_t": deployed, "shutdown_t": shutdown, "burst_t": started,
            "bounds": bounds, "replicas_before": before, "peak_replicas": peak, "burst_s": round(ended - started, 1),
            "requests": counts, "fallback_after_s": fallback_s, "scale_down_after_s": idle_s,
            "scaled_up": any(peak[n] > bounds[n][0] for n in bounds), "within_bounds": within}


def plot(samples: list[dict], spans: dict[str, tuple[float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = [s for s in samples if "workers" in s]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, height_ratios=(3, 2))
    top.step([s["t"] for s in rows], [s["workers"] for s in rows], where="post", color="tab:blue")
    top.set_ylabel("worker nodes")
    for (label, (start, end)), color in zip(spans.items(), ("tab:green", "tab:orange", "tab:red")):
        for axis in (top, bottom):
            axis.axvspan(start, end, color=color, alpha=0.12, label=label if axis is top else None)
    top.legend(loc="upper right", fontsize=8)
    for axis in (top, bottom):
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    names = sorted({n for s in rows for n in s.get("replicas", {})} & set(MODEL_DEPLOYMENTS))
    for name in names:
        bottom.step([s["t"] for s in rows], [s.get("replicas", {}).get(name, 0) for s in rows], where="post",
                    label=name)
    bottom.set_ylabel("running replicas")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left")
    top.set_title("fake autoscaling cluster from cluster.yaml: training job, then a Serve load burst")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def spans(result: dict) -> dict[str, tuple[float, float]]:
    out = {}
    if "train" in result:
        out["training job"] = (result["train"]["submitted_t"], result["train"]["finished_t"])
    if "serve" in result:
        out["Serve deployed"] = (result["serve"]["deployed_t"], result["serve"]["shutdown_t"])
        out["load burst"] = (result["serve"]["burst_t"], result["serve"]["burst_t"] + result["serve"]["burst_s"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/bench/autoscaling")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-nodes", type=int, default=3)
    parser.add_argument("--idle-timeout-s", type=float, default=15)
    parser.add_argument("--burst-s", type=float, default=45)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--downscale-delay-s", type=float, default=15)
    parser.add_argument("--target-ongoing", type=float, default=2,
                        help="target ongoing requests per model replica (serve/config.yaml's 16 needs more load "
                             "than 2 cores can send; 0 keeps the config's)")
    parser.add_argument("--serve-bundle", default="",
                        help="bundle for the Serve phase (default: the one the training job exported)")
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["RAY_AUTH_MODE"] = "token"  # `ray start` clusters use token auth: head, nodes and this driver
    port = free_port()
    config = fake_autoscaling_config(str(ROOT / "cluster.yaml"), f"127.0.0.1:{port}", cpus_per_node=1,
                                     max_nodes=args.max_nodes, idle_timeout_minutes=args.idle_timeout_s / 60)
    cluster = FakeAutoscalingCluster(config, f"/tmp/facegen-autoscale-{os.getpid()}", port)
    result: dict = {"cluster": {k: config[k] for k in ("max_workers", "idle_timeout_minutes", "available_node_types")}}
    ok = False
    try:
        import ray

        cluster.start({"PYTHONPATH": str(ROOT)})
        ray.init(address=cluster.address, log_to_driver=False, logging_config=ray.LoggingConfig(log_level="WARNING"))
        sampler = Sampler(FAKE_HEAD_ID).start()
        sampler.event(f"head up (0 CPUs), {sampler.workers()} worker nodes")
        result["train"] = train_phase(cluster, sampler, out, args)
        ok = result["train"]["ok"] and result["train"]["max_worker_nodes"] >= 2
        if not args.skip_serve and result["train"]["ok"]:
            bundle = str(Path(args.serve_bundle).resolve()) if args.serve_bundle else result["train"]["bundle"]
            result["serve"] = serve_phase(sampler, args, bundle)
            ok = ok and result["serve"]["scaled_up"] and result["serve"]["within_bounds"]
        sampler.stop()
        result.update(samples=sampler.samples, events=sampler.events, ok=ok)
        plot(sampler.samples, spans(result), out / "nodes.png")
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
        (out / "autoscaling.json").write_text(json.dumps(result, indent=1))
    summary = {k: {key: v for key, v in result[k].items() if key != "bundle"}
               for k in ("train", "serve") if k in result}
    print(json.dumps({"ok": ok, **summary, "plot": str(out / "nodes.png")}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
