"""``facegen serve``: serve/config.yaml with the bundles and address replaced, refused in one line before Ray
starts when something is wrong, and deployed through Serve's own config path (what ``serve run`` does)."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys

import httpx
import pytest
import yaml

from facegen.errors import FacegenError
from serve.launch import (DEFAULT_CONFIG, check_bundles, check_port_free, run_serve, service_url, serving_config,
                          start_serving)
from tests.conftest import free_port


def test_serving_config_replaces_only_the_bundles_and_the_address(tiny_bundles):
    source = yaml.safe_load(open(DEFAULT_CONFIG))
    config = serving_config(bundle=tiny_bundles["vae"], classifier=tiny_bundles["classifier"],
                            host="0.0.0.0", port=8123)
    check_bundles(config)
    (app,), (source_app,) = config["applications"], source["applications"]
    assert app["args"] == {**source_app["args"], "bundle": tiny_bundles["vae"],
                           "classifier": tiny_bundles["classifier"]}
    assert app["deployments"] == source_app["deployments"]
    assert config["http_options"] == {**source["http_options"], "host": "0.0.0.0", "port": 8123}
    assert config["proxy_location"] == source["proxy_location"]
    assert service_url(config) == "http://127.0.0.1:8123"  # a wildcard address is opened through loopback

    fused = serving_config(bundle=tiny_bundles["vae"], classifier=tiny_bundles["classifier"], fused=True)
    assert fused["applications"][0]["args"]["fused"] is True
    assert [d["name"] for d in fused["applications"][0]["deployments"]] == ["Editor"]  # no model deployments left

    alone = serving_config(bundle=tiny_bundles["vae"], no_classifier=True)
    assert "classifier" not in alone["applications"][0]["args"]
    assert alone["http_options"] == source["http_options"]


@pytest.mark.parametrize("text, message", [
    (None, "Serve config not found"),
    ("applications: [", "not YAML"),
    ("- a list", "not a Serve config"),
    ("applications: [{name: x, import_path: other:app}]", "expected one application with import_path"),
    ("http_options: {port: many}\napplications: [{import_path: 'serve.app:build_app', args: {bundle: b}}]",
     "http_options.port"),
    ("applications: [{import_path: 'serve.app:build_app', args: {bundle: b, max_batch_size: 0}}]",
     "max_batch_size"),
])
def test_a_bad_serve_config_is_one_line(tmp_path, text, message):
    path = tmp_path / "serve.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(FacegenError, match=message) as caught:
        serving_config(str(path))
    assert "\n" not in str(caught.value)


def test_bad_paths_and_a_busy_port_are_refused_before_ray(tiny_bundles, tmp_path):
    with pytest.raises(FacegenError, match=r"--classifier .*absent: not a model bundle"):
        check_bundles(serving_config(bundle=tiny_bundles["vae"], classifier=str(tmp_path / "absent")))
    with pytest.raises(FacegenError, match="--bundle"):
        check_bundles(serving_config(bundle=str(tmp_path), no_classifier=True))  # a folder, not a bundle
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(FacegenError, match=f"--port {port}: cannot listen on 127.0.0.1"):
            check_port_free(serving_config(bundle=tiny_bundles["vae"], port=port))
    args = dict(bundle=tiny_bundles["vae"], classifier=None, no_classifier=False, config=DEFAULT_CONFIG,
                host=None, port=None, print_config=False, guide=None, no_guide=False)
    with pytest.raises(FacegenError, match="--port 70000"):
        run_serve(argparse.Namespace(**{**args, "port": 70000}))
    with pytest.raises(FacegenError, match="exclude each other"):
        run_serve(argparse.Namespace(**{**args, "classifier": tiny_bundles["classifier"], "no_classifier": True}))
    with pytest.raises(FacegenError, match="--guide and --no-guide exclude each other"):
        run_serve(argparse.Namespace(**{**args, "guide": tiny_bundles["classifier"], "no_guide": True}))
    with pytest.raises(FacegenError, match=r"--guide .*absent: not a model bundle"):
        check_bundles(serving_config(bundle=tiny_bundles["vae"], guide=str(tmp_path / "absent"), no_classifier=True))
    # The scores the page shows must not come from the model the edit was pushed against: one line, no pydantic.
    with pytest.raises(FacegenError, match=r"config: guide must be another classifier than 'classifier'") as caught:
        serving_config(bundle=tiny_bundles["vae"], classifier=tiny_bundles["classifier"],
                       guide=tiny_bundles["classifier"])
    assert "Value error" not in str(caught.value)
    guided = serving_config(bundle=tiny_bundles["vae"], guide=tiny_bundles["classifier"], no_classifier=True)
    assert guided["applications"][0]["args"]["guide"] == tiny_bundles["classifier"]
    assert "guide" not in serving_config(bundle=tiny_bundles["vae"], guide=tiny_bundles["classifier"],
                                         no_guide=True)["applications"][0]["args"]


def test_print_config_is_a_serve_config(tiny_bundles):
    from ray.serve.schema import ServeDeploySchema

    done = subprocess.run([sys.executable, "-m", "facegen.cli", "serve", "--bundle", tiny_bundles["vae"],
                           "--no-classifier", "--port", "8765", "--fused", "--print-config"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    schema = ServeDeploySchema.model_validate(yaml.safe_load(done.stdout))
    assert schema.http_options.port == 8765 and schema.applications[0].args["bundle"] == tiny_bundles["vae"]
    assert schema.applications[0].args["fused"] is True


@pytest.mark.ray
def test_the_config_deploys_through_serve(serve_url, tiny_bundles):
    """On the session's Serve (already listening on ``serve_url``), as a second application beside it."""
    from ray import serve

    config = serving_config(bundle=tiny_bundles["vae"], classifier=tiny_bundles["classifier"])
    config["applications"][0].update(name="facegen-config", route_prefix="/from-config")
    start_serving(config)
    try:
        models = httpx.get(serve_url + "/from-config/v1/models", timeout=30).json()
        assert models["generator"]["bundle"] == tiny_bundles["vae"]
        edit = httpx.get(serve_url + "/from-config/v1/attributes", timeout=30)
        assert edit.status_code == 200
        # The config's own deployment settings, which serve.run(build_app(...)) would not apply.
        from ray.serve.context import _get_global_client

        deployed = _get_global_client().get_serve_details()["applications"]["facegen-config"]["deployments"]
        for source in yaml.safe_load(open(DEFAULT_CONFIG))["applications"][0]["deployments"]:
            settings = deployed[source["name"]]["deployment_config"]
            assert settings["max_queued_requests"] == source["max_queued_requests"]
            assert (settings.get("autoscaling_config") or {}).get("max_replicas") == \
                source.get("autoscaling_config", {}).get("max_replicas")
    finally:
        serve.delete("facegen-config")


def _facegen(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facegen.cli", *argv], capture_output=True, text=True, timeout=120,
                          env=env)


def test_direct_ingress_and_haproxy_are_refused_in_one_line_where_they_cannot_work(tiny_bundles):
    import os
    import socket

    serve_args = ("serve", "--bundle", tiny_bundles["vae"], "--no-classifier")
    with socket.socket() as taken:  # HAProxy's stats page would fail to bind it once Ray is up
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        stats_port, spare = taken.getsockname()[1], free_port()
        for argv, env, message in [
            ((*serve_args, "--direct-ingress", "--direct-port", "70000"), None,
             "error: --direct-port 70000: expected 1..65435"),
            ((*serve_args, "--direct-ingress"), {"RAY_ADDRESS": "127.0.0.1:6379"},
             "error: --direct-ingress works with the Ray this command starts; for a cluster, set "
             "RAY_SERVE_THROUGHPUT_OPTIMIZED=1 on every node"),
            ((*serve_args, "--haproxy"), {"RAY_ADDRESS": "127.0.0.1:6379"},
             "error: --haproxy works with the Ray this command starts; for a cluster, set "
             "RAY_SERVE_THROUGHPUT_OPTIMIZED=1 and RAY_SERVE_ENABLE_HA_PROXY=1 on every node"),
            ((*serve_args, "--haproxy"), {"RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port)},
             f"error: --haproxy: port {stats_port} is taken (Address already in use); "
             "set RAY_SERVE_HAPROXY_STATS_PORT to a free one"),
            ((*serve_args, "--haproxy", "--port", str(spare)), {"RAY_SERVE_HAPROXY_STATS_PORT": str(spare)},
             f"error: --port {spare}: HAProxy mode takes that port for itself; choose another"),
            ((*serve_args, "--haproxy"), {"RAY_SERVE_HAPROXY_BINARY_PATH": "/nonexistent/haproxy"},
             "error: --haproxy: no HAProxy binary (RAY_SERVE_HAPROXY_BINARY_PATH='/nonexistent/haproxy' does not "
             "point to an executable file.)"),
        ]:
            done = _facegen(*argv, env={**os.environ, **(env or {})})
            assert done.returncode == 2 and done.stderr.strip().startswith(message), done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_direct_ingress_reaches_ray_serve_and_its_url_is_found(tiny_bundles, monkeypatch):
    """Ray Serve reads the switches and the port range from the environment enable_ingress sets (in a fresh
    process: Serve reads them at import); the URL is the first port of the range whose /healthz answers."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from serve import launch
    from serve.launch import direct_ingress_url

    for mode, switches in (("direct", "False True 31000 31099"), ("haproxy", "True True 31000 31099")):
        done = subprocess.run([sys.executable, "-c", (
            f"from serve.ingress import enable_ingress; enable_ingress({mode!r}, 31000)\n"
            "from ray.serve._private import constants as c\n"
            "print(c.RAY_SERVE_ENABLE_HA_PROXY, c.RAY_SERVE_ENABLE_DIRECT_INGRESS, "
            "c.RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT, c.RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT)")],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.split() == switches.split(), (mode, done.stdout, done.stderr)

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    # Three consecutive ports held by this test (bound, not listening: a probe there is refused), so that no
    # other server of the session (its Serve app answers /healthz too) can sit in the probed range.
    monkeypatch.setattr(launch, "DIRECT_INGRESS_PORTS", 3)
    held = _three_consecutive_ports()
    first = held[0].getsockname()[1]
    held.pop().close()
    server = ThreadingHTTPServer(("127.0.0.1", first + 2), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = serving_config(bundle=tiny_bundles["vae"], no_classifier=True)
    try:
        assert direct_ingress_url(config, first, timeout_s=10) == f"http://127.0.0.1:{first + 2}"  # skips two
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(FacegenError, match=f"no direct-ingress replica answered on ports {first}-{first + 2} "):
        direct_ingress_url(config, first, timeout_s=1)
    for sock in held:
        sock.close()


def _three_consecutive_ports() -> list:
    """Sockets bound (not listening) to three consecutive free ports of 127.0.0.1."""
    for _ in range(200):
        held = []
        base = free_port()
        try:
            for port in range(base, base + 3):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return held
        except OSError:
            for sock in held:
                sock.close()
    raise AssertionError("no three consecutive free ports on 127.0.0.1")
