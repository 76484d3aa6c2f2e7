"""Node loss under serving load: SIGKILL the node that holds the model replicas while clients edit; every
request ends within its timeout (answered, or a 503 the client retries), none gets a 500, and service resumes.

    flock /tmp/facegen-ray.lock .venv/bin/python bench/serve_node_loss.py [--out out/bench/serve_node_loss]

A ``ray.cluster_utils.Cluster`` on this machine: a head (1 CPU) with Serve's controller, the HTTP proxy
(``proxy_location: HeadOnly``, as in ``serve/config.yaml``) and the ``Editor`` ingress, and a 1-CPU worker node
with the ``Encoder``, ``Decoder`` and ``Classifier`` replicas (custom resources pin them; the rest of the
deployed config is ``serve/config.yaml`` as written, on two tiny untrained bundles). ``--concurrency`` clients
post ``/v1/edit`` back to back through ``facegen.client.post_json`` (bounded retries of 503s and dropped
connections, ``--timeout`` for the whole call); ``--kill-at`` seconds in, the worker node is removed with
SIGKILL and, as an autoscaler would, a fresh one is added (``--replace-after`` seconds later).

Reported per second: answers, answers after a retry, 503s, timeouts, other errors; the time from the kill to
the first answered request sent after it and to the last failed attempt. Writes ``serve_node_loss.json`` and
``serve_node_loss.png`` under ``--out``; exits 1 if a request hung past its timeout, got a 500 or an error
other than a 503, or service did not resume.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_cluster import NODE_OBJECT_STORE, free_port, tiny_shards  # noqa: E402
from facegen.client import build_request, post_json  # noqa: E402
from facegen.errors import FacegenError  # noqa: E402

INGRESS, MODELS = "facegen_ingress", "facegen_models"  # custom resources: which node holds which replicas
MODEL_DEPLOYMENTS = ("Encoder", "Decoder", "Classifier")


def node_loss_config(bundles: dict[str, str], port: int, model_nodes: int) -> dict:
    """serve/config.yaml on the tiny bundles, the Editor pinned to the head and the model replicas to the
    worker nodes (a custom resource each); with several model nodes, one replica of each model deployment on
    each (``min_replicas``, ``max_replicas_per_node`` 1); everything else as written."""
    from serve.launch import facegen_app, serving_config

    config = serving_config(bundle=bundles["vae"], classifier=bundles["classifier"], host="127.0.0.1", port=port)
    app = facegen_app(config)
    app["args"]["align"] = False  # the load's flat-colour images have no face to find
    for deployment in app["deployments"]:
        where = MODELS if deployment["name"] in MODEL_DEPLOYMENTS else INGRESS
        options = deployment.setdefault("ray_actor_options", {})
        options["resources"] = {**options.get("resources", {}), where: 0.01}
        if where == MODELS and model_nodes > 1:
            deployment["max_replicas_per_node"] = 1
            deployment["autoscaling_config"].update(min_replicas=model_nodes, max_replicas=model_nodes)
    return config


def classify(exc: FacegenError) -> str:
    text = str(exc)
    for needle, kind in (("no answer within", "timeout"), ("HTTP 503", "503"), ("HTTP 500", "500"),
                         ("HTTP 408", "408")):
        if needle in text:
            return kind
    return "error"


class Load:
    """``concurrency`` threads posting ``/v1/edit`` back to back until ``stop()``; records every request
    (start, end, outcome) and every retried attempt (time, reason), times in seconds from ``t0``."""

    def __init__(self, url: str, concurrency: int, timeout_s: float) -> None:
        out = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (40, 40), (120, 90, 60)).save(out, format="PNG")
        self.body = build_request(out.getvalue(), {"Smiling": 1.0}, [], None, align=False)
        self.url, self.timeout_s = url + "/v1/edit", timeout_s
        self.t0 = time.monotonic()
        self.requests: list[dict] = []
        self.retries: list[dict] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(concurrency)]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _client(self) -> None:
        while not self._stop.is_set():
            start, tries = self.now(), []

            def retried(reason: str) -> None:
                tries.append(reason)
                self.retries.append({"t": round(self.now(), 3), "reason": reason})

            try:
                post_json(self.url, self.body, self.timeout_s, on_retry=retried)
                outcome, message = ("ok_retried" if tries else "ok"), None
            except FacegenError as exc:
                outcome, message = classify(exc), str(exc)[-200:]
            self.requests.append({"start": round(start, 3), "end": round(self.now(), 3), "outcome": outcome,
                                  "retries": tries, **({"message": message} if message else {})})

    def start(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 10)


def per_second(load: Load, seconds: int) -> list[dict]:
    """Per second of the run (by when an attempt ended): answered first time, answered after a retry, 503s
    (retried or final), timeouts, other errors."""
    rows = [{"t": t, "ok": 0, "ok_retried": 0, "503": 0, "timeout": 0, "error": 0} for t in range(seconds + 1)]

    def add(t: float, key: str) -> None:
        rows[min(int(t), seconds)][key] += 1

    for r in load.retries:
        add(r["t"], "503" if r["reason"] == "HTTP 503" else "error")
    for r in load.requests:
        add(r["end"], {"408": "timeout"}.get(r["outcome"], r["outcome"]) if r["outcome"] != "500" else "error")
    return rows


def plot(rows: list[dict], requests: list[dict], killed: float, marks: dict[str, float | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ts = [r["t"] - killed for r in rows]
    bottom_of = [0] * len(rows)
    for key, colour in (("ok", "tab:green"), ("ok_retried", "tab:olive"), ("503", "tab:orange"),
                        ("timeout", "tab:red"), ("error", "black")):
        values = [r[key] for r in rows]
        top.bar(ts, values, width=0.9, bottom=bottom_of, color=colour, label=key, align="edge")
        bottom_of = [b + v for b, v in zip(bottom_of, values)]
    top.set_ylim(0, max(bottom_of) * 1.3 + 1)  # room for the legend
    top.set_ylabel("attempts ended / s")
    top.legend(ncol=5, fontsize=8)
    colours = {"ok": "tab:green", "ok_retried": "tab:olive", "503": "tab:orange"}
    for r in requests:
        bottom.scatter(r["start"] - killed, r["end"] - r["start"], s=8, color=colours.get(r["outcome"], "red"))
    bottom.set_ylabel("request seconds (retries incl.)")
    bottom.set_xlabel("seconds from the SIGKILL of the model replicas' node")
    for axis in (top, bottom):
        axis.axvline(0, color="grey", linestyle="--", label="SIGKILL" if axis is bottom else None)
        for (label, t), style in zip(marks.items(), (":", "-.")):
            if t is not None:
                axis.axvline(t - killed, color="tab:blue", linestyle=style, label=label if axis is bottom else None)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def replica_nodes() -> dict[str, set[str]]:
    """{deployment: node ids of its alive replicas}."""
    from ray.util.state import list_actors

    found: dict[str, set[str]] = {}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
        name = actor.class_name or ""
        if name.startswith("ServeReplica:"):
            found.setdefault(name.rsplit(":", 1)[-1], set()).add(actor.node_id)
    return found


class Watch:
    """Every ``period_s`` (times on ``load``'s clock): whether Ray still counts ``node_id`` alive, and whether
    each model deployment has ``replicas`` alive replicas on other nodes (``list_actors``: Serve's own status
    counts a replica on the lost node as running until its health check fails)."""

    def __init__(self, load: Load, node_id: str, replicas: int, period_s: float = 0.5) -> None:
        self.load, self.node_id, self.replicas, self.period_s = load, node_id, replicas, period_s
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import ray

        while not self._stop.wait(self.period_s):
            try:
                alive = any(n["NodeID"] == self.node_id and n["Alive"] for n in ray.nodes())
                elsewhere = {name: len(nodes - {self.node_id}) for name, nodes in replica_nodes().items()}
                self.samples.append({"t": round(self.load.now(), 2), "node_alive": alive,
                                     "models_elsewhere": all(elsewhere.get(n, 0) >= self.replicas
                                                             for n in MODEL_DEPLOYMENTS)})
            except Exception as exc:  # a sample lost while the cluster changes is no reason to stop
                self.samples.append({"t": round(self.load.now(), 2), "error": repr(exc)[:200]})

    def start(self) -> "Watch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def first(self, key: str, value: bool, after: float) -> float | None:
        return next((s["t"] for s in self.samples if s["t"] >= after and s.get(key) is value), None)


def summarise(load: Load, killed: float, timeout_s: float) -> dict:
    after = [r for r in load.requests if r["start"] >= killed]
    answered = [r for r in after if r["outcome"].startswith("ok")]
    failed_at = [r["t"] for r in load.retries if r["t"] >= killed]
    failed_at += [r["end"] for r in load.requests if not r["outcome"].startswith("ok") and r["end"] >= killed]
    counts: dict[str, int] = {}
    for r in load.requests:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    reasons: dict[str, int] = {}
    for r in load.retries:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    before = [r["end"] - r["start"] for r in load.requests if r["end"] < killed]
    return {"requests": len(load.requests), "outcomes": counts, "retried_attempts": reasons,
            "requests_retried": sum(1 for r in load.requests if r["retries"]),
            "first_answer_sent_after_kill_s": round(min(r["end"] for r in answered) - killed, 1) if answered else None,
            "last_failed_attempt_after_kill_s": round(max(failed_at) - killed, 1) if failed_at else None,
            "max_request_s": round(max(r["end"] - r["start"] for r in load.requests), 1),
            "median_request_before_kill_s": round(sorted(before)[len(before) // 2], 3) if before else None,
            "timeout_s": timeout_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/bench/serve_node_loss")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration")
    parser.add_argument("--kill-at", type=float, default=12.0, help="seconds into the load")
    parser.add_argument("--replace-after", type=float, default=0.0, help="seconds from the kill to the new node")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, retries included")
    parser.add_argument("--model-nodes", type=int, default=1,
                        help="worker nodes with one replica of each model deployment each; the first is killed")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from serve.launch import start_serving
    from tests.serve.conftest import write_tiny_bundle

    shards = tiny_shards(out)
    bundles = {family: write_tiny_bundle(family, str(out / "bundles" / family), shards)
               for family in ("vae", "classifier")}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {INGRESS: 1}, "include_dashboard": True, "object_store_memory": 200 * 2 ** 20})
    node_args = {"num_cpus": 1, "resources": {MODELS: 1}, "object_store_memory": NODE_OBJECT_STORE}
    result: dict = {"concurrency": args.concurrency, "kill_at_s": args.kill_at, "replace_after_s": args.replace_after,
                    "model_nodes": args.model_nodes}
    checks: dict[str, bool] = {}
    try:
        model_nodes = [cluster.add_node(**node_args) for _ in range(args.model_nodes)]
        victim = model_nodes[0]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_config=ray.LoggingConfig(log_level="WARNING"))
        started = time.monotonic()
        url = start_serving(node_loss_config(bundles, free_port(), args.model_nodes))
        result["deploy_s"] = round(time.monotonic() - started, 1)
        placed = replica_nodes()
        assert all(placed.get(name) == {n.node_id for n in model_nodes} for name in MODEL_DEPLOYMENTS), placed
        load = Load(url, args.concurrency, args.timeout).start()
        watch = Watch(load, victim.node_id, args.model_nodes).start()
        time.sleep(max(0.0, args.kill_at - load.now()))
        killed = load.now()
        cluster.remove_node(victim, allow_graceful=False)  # SIGKILL, as Ray's own tests lose a node
        print(f"[{killed:5.1f} s] killed the model node ({len(load.requests)} requests so far)", flush=True)
        time.sleep(args.replace_after)
        cluster.add_node(**node_args)  # the autoscaler's replacement
        print(f"[{load.now():5.1f} s] added a fresh node", flush=True)
        time.sleep(max(0.0, args.seconds - load.now()))
        load.stop()
        watch.stop()
        dead, moved = watch.first("node_alive", False, killed), watch.first("models_elsewhere", True, killed)
        result.update(summarise(load, killed, args.timeout), kill_t=round(killed, 2),
                      node_marked_dead_after_s=round(dead - killed, 1) if dead is not None else None,
                      model_replicas_on_new_node_after_s=round(moved - killed, 1) if moved is not None else None)
        (out / "watch.json").write_text(json.dumps(watch.samples))
        rows = per_second(load, int(load.now()))
        result["per_second"] = [{**r, "t": round(r["t"] - killed, 1)} for r in rows]
        plot(rows, load.requests, killed, {"node marked dead": dead, "replicas on the new node": moved},
             out / "serve_node_loss.png")
        (out / "requests.json").write_text(json.dumps({"requests": load.requests, "retries": load.retries}))
        outcomes = result["outcomes"]
        checks = {"no_request_past_timeout": result["max_request_s"] <= args.timeout + 2
                  and not outcomes.get("timeout") and not outcomes.get("408"),
                  "no_500": not outcomes.get("500"),
                  "only_503_or_answered": set(outcomes) <= {"ok", "ok_retried", "503"},
                  "service_resumed": result["first_answer_sent_after_kill_s"] is not None}
    finally:
        result["checks"] = checks
        if ray.is_initialized():
            serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        (out / "serve_node_loss.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "per_second"}, indent=1))
    return 0 if checks and all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
