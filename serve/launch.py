"""``facegen serve``: the editing service from ``serve/config.yaml``, deployed the way ``serve run`` deploys it.

    facegen serve --bundle out/demo/runs/cvae_edit_demo64/bundle --classifier out/demo/runs/classifier_synth64/bundle

The command is a thin layer over Serve's own config: it reads ``serve/config.yaml`` (or ``--config``), replaces
the bundles and the HTTP address, checks the result against Ray's ``ServeDeploySchema`` and hands it to Serve
unchanged otherwise (deployments, autoscaling, queue limits, timeouts all stay the config's). Wrong paths, a
port in use or an invalid config are refused in one line before Ray starts. ``serving_config`` is also what
the demo serves and what ``deploy/kuberay/generate.py`` writes into the RayService, so the three cannot drift.
Like ``serve run``, it runs from the repository root, where the ``serve`` package is.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from facegen import io as fsio
from facegen.errors import FacegenError
from serve.ingress import DIRECT_INGRESS_PORTS, enable_ingress, haproxy_side_ports, probe_port

DEFAULT_CONFIG = str(Path(__file__).with_name("config.yaml"))
APP_IMPORT_PATH = "serve.app:build_app"
DEPLOY_TIMEOUT_S = 600  # replicas that never get resources would otherwise leave the command waiting for good


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    message = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
    return f"{'.'.join(str(part) for part in error['loc']) or 'config'}: {message}"


def facegen_app(config: dict, where: str = "the Serve config") -> dict:
    """The application of ``config`` that runs ``serve.app:build_app`` (the editing service)."""
    apps = [app for app in config.get("applications") or [] if app.get("import_path") == APP_IMPORT_PATH]
    if len(apps) != 1:
        raise FacegenError(f"{where}: expected one application with import_path {APP_IMPORT_PATH}, "
                           f"found {len(apps)}")
    return apps[0]


def serving_config(path: str = DEFAULT_CONFIG, *, bundle: str | None = None, classifier: str | None = None,
                   no_classifier: bool = False, host: str | None = None, port: int | None = None,
                   guide: str | None = None, no_guide: bool = False, fused: bool = False) -> dict:
    """``path`` (a Serve config YAML) with the editing service's bundles and the HTTP address replaced, checked
    against Ray's ``ServeDeploySchema`` and the app's own ``AppArgs``; returns the plain dict Serve deploys.
    Local bundle paths are made absolute (replicas do not run in this folder); URIs stay as written."""
    from ray.serve.schema import ServeDeploySchema

    from serve.app import AppArgs, model_deployments

    try:
        config = yaml.safe_load(Path(path).read_text())
    except OSError:
        raise FacegenError(f"{path}: Serve config not found") from None
    except yaml.YAMLError as exc:
        raise FacegenError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise FacegenError(f"{path}: not a Serve config (expected a mapping)")
    args = facegen_app(config, path).setdefault("args", {})
    args.update({key: value for key, value in (("bundle", bundle), ("classifier", classifier), ("guide", guide))
                 if value})
    if no_classifier:
        args.pop("classifier", None)
    if no_guide:
        args.pop("guide", None)
    if fused:
        args["fused"] = True
    config["http_options"] = {**(config.get("http_options") or {}),
                              **{key: value for key, value in (("host", host), ("port", port)) if value}}
    try:
        ServeDeploySchema.model_validate(config)
        args.update({key: value for key, value in AppArgs.model_validate(args).model_dump().items()
                     if key in args})
    except ValidationError as exc:
        raise FacegenError(f"{path}: {_one_line(exc)}") from None
    # Serve refuses settings for a deployment the app does not build: with ``fused: true`` (or without a
    # classifier) the entries of the split model deployments are dropped; FusedModels keeps its code's options.
    app = facegen_app(config, path)
    built = {"Editor", *model_deployments(args)}
    if app.get("deployments"):
        app["deployments"] = [d for d in app["deployments"] if d.get("name") in built]
    return config


def check_bundles(config: dict) -> None:
    """Every bundle the editing service names is there (a ``meta.json``, locally or at a URI): a wrong path is
    one line now, not replicas failing to start again and again after Ray is up."""
    args = facegen_app(config)["args"]
    for key in ("bundle", "classifier", "guide"):
        location = args.get(key)
        if not location:
            continue
        try:
            found = fsio.is_file(*fsio.resolve(fsio.join(location, "meta.json")))
        except OSError as exc:  # an unreachable bucket, missing credentials
            raise FacegenError(f"--{key} {location}: cannot be read ({str(exc).splitlines()[0]})") from None
        if not found:
            raise FacegenError(f"--{key} {location}: not a model bundle (no meta.json there)")


def check_port_free(config: dict) -> None:
    """Refuse a port another program holds before starting Ray (Serve's proxy would fail to bind it later)."""
    http = config["http_options"]
    host, port = http.get("host", "127.0.0.1"), int(http.get("port", 8000))
    try:
        probe_port(host, port)
    except OSError as exc:
        raise FacegenError(f"--port {port}: cannot listen on {host} ({exc.strerror})") from None


def direct_ingress_url(config: dict, first_port: int, timeout_s: float = 60) -> str:
    """The running ingress replica's own URL: the first port from ``first_port`` whose ``/healthz`` answers
    (the first replica normally gets ``first_port`` itself; a port a deleted app used stays taken a while)."""
    import http.client
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for port in range(first_port, first_port + DIRECT_INGRESS_PORTS):
            url = service_url(config, port)
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=0.5) as answer:
                    if answer.status == 200:
                        return url
            except (urllib.error.URLError, OSError, http.client.HTTPException):  # nothing there, or not HTTP
                continue
        time.sleep(0.5)
    raise FacegenError(f"no direct-ingress replica answered on ports {first_port}-"
                       f"{first_port + DIRECT_INGRESS_PORTS - 1} within {timeout_s:.0f} s")


def service_url(config: dict, port: int | None = None) -> str:
    """Where a browser on this machine reaches the service (a wildcard host is reached through loopback), at the
    config's port or at ``port``."""
    http = config["http_options"]
    host = http.get("host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    prefix = facegen_app(config).get("route_prefix", "/").rstrip("/")
    return f"http://{host}:{port or int(http.get('port', 8000))}{prefix}"


def start_serving(config: dict, timeout_s: float = DEPLOY_TIMEOUT_S) -> str:
    """Start Serve with the config's proxy and HTTP options, deploy its applications as ``serve run`` does
    (on the Ray this process is connected to) and wait until the editing service runs; returns its URL."""
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location,
                         grpc_options=schema.grpc_options.model_dump(), global_logging_config=schema.logging_config)
    client.deploy_apps(schema)
    name = facegen_app(config).get("name", "default")
    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(name)
        state = app.status if app else "NOT_STARTED"
        if state == "RUNNING":
            return service_url(config)
        if state == "DEPLOY_FAILED":
            reason = (app.message or "").strip().splitlines() or ["see the Serve logs"]
            raise FacegenError(f"the Serve application {name!r} failed to deploy: {reason[-1]}")
        if time.monotonic() > deadline:
            raise FacegenError(f"the Serve application {name!r} is still {state} after {timeout_s:.0f} s "
                               "(not enough CPUs/GPUs for its replicas?)")
        time.sleep(0.5)


def wait_for_ctrl_c() -> None:
    """Block until Ctrl-C (or SIGTERM), so the printed URL keeps working while someone tries it."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    print("\nstopping the server", file=sys.stderr)


def stop_serving() -> None:
    """Delete the applications and Serve's actors (the local Ray, if this process started it, ends with it)."""
    from ray import serve

    serve.shutdown()


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", help="model bundle to serve, path or URI (default: the config's args.bundle)")
    parser.add_argument("--classifier", help="attribute-classifier bundle for the scores (default: the config's)")
    parser.add_argument("--no-classifier", action="store_true", help="serve without a classifier (no scores)")
    parser.add_argument("--guide", help="a second attribute-classifier bundle that steers 'guided' edits, then the "
                                        "default method (not the --classifier: its scores would only confirm the "
                                        "push; default: the config's, none in serve/config.yaml)")
    parser.add_argument("--no-guide", action="store_true", help="serve without a guide (no guided edits)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="Serve config to start from (default serve/config.yaml)")
    parser.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1; 0.0.0.0 exposes "
                                       "the service to the network)")
    parser.add_argument("--port", type=int, help="HTTP port (default: the config's, 8000)")
    parser.add_argument("--fused", action="store_true",
                        help="load encoder, decoder and classifier into the ingress replica (the app's fused: true): "
                             "no hop between them, for small models on few cores (default: the config's, split)")
    ingress = parser.add_mutually_exclusive_group()
    ingress.add_argument("--haproxy", action="store_true",
                         help="HAProxy in place of Serve's Python proxy, at the same URL (Ray Serve's HAProxy mode, "
                              "experimental in Ray 2.60; a local Ray only): 1.6-1.9x the edits per second on 2 cores "
                              "(README, Performance); its stats page and metrics listen on ports 8404 and 9101")
    ingress.add_argument("--direct-ingress", action="store_true",
                         help="also serve straight from the ingress replica, without a proxy (Ray Serve's "
                              "throughput-optimized mode, experimental in Ray 2.60; a local Ray only): its URL is "
                              "printed; 1.5-1.9x the edits per second of Serve's proxy on 2 cores")
    parser.add_argument("--direct-port", type=int, default=30000,
                        help="with --haproxy or --direct-ingress: the first port an ingress replica may take for "
                             "its own HTTP server (default 30000)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resulting Serve config (for serve deploy) and exit without starting Ray")


def run_serve(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        raise FacegenError(f"--port {args.port}: expected 1..65535")
    if args.classifier and args.no_classifier:
        raise FacegenError("--classifier and --no-classifier exclude each other")
    if args.guide and args.no_guide:
        raise FacegenError("--guide and --no-guide exclude each other")
    mode = ("direct" if getattr(args, "direct_ingress", False) else "haproxy" if getattr(args, "haproxy", False)
            else "proxy")
    if not args.print_config:
        enable_ingress(mode, args.direct_port)  # before anything imports Ray Serve
    config = serving_config(args.config, bundle=args.bundle, classifier=args.classifier,
                            no_classifier=args.no_classifier, host=args.host, port=args.port,
                            guide=args.guide, no_guide=args.no_guide, fused=getattr(args, "fused", False))
    check_bundles(config)
    if args.print_config:
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    check_port_free(config)
    port = int(config["http_options"].get("port", 8000))
    if mode == "haproxy" and port in haproxy_side_ports().values():
        raise FacegenError(f"--port {port}: HAProxy mode takes that port for itself; choose another")
    from facegen.runtime import init_ray

    init_ray()
    try:
        url = start_serving(config)
        served = facegen_app(config)["args"]
        print(f"serving {served['bundle']}" + (f" with the classifier {served['classifier']}"
                                               if served.get("classifier") else "")
              + (f", guided edits by {served['guide']}" if served.get("guide") else ""), flush=True)
        print(f"web page: {url}/   API: {url}/v1/edit   docs: {url}/docs   (Ctrl-C stops the server)", flush=True)
        if mode == "direct":
            print(f"direct ingress, no proxy: {direct_ingress_url(config, args.direct_port)}/", flush=True)
        if mode == "haproxy":
            side = haproxy_side_ports()
            print(f"HAProxy in front (stats: http://127.0.0.1:{side['RAY_SERVE_HAPROXY_STATS_PORT']}/stats, "
                  f"metrics: :{side['RAY_SERVE_HAPROXY_METRICS_PORT']}/metrics; both on every interface)", flush=True)
        wait_for_ctrl_c()
    finally:
        stop_serving()
    return 0
