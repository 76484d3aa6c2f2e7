"""A replica killed under load is replaced by Serve; requests in flight end (answered or a 503 to retry)
within the request timeout, and service resumes. Runs last in the serve tests: it kills a replica."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.ray


def _body() -> dict:
    out = io.BytesIO()
    Image.new("RGB", (40, 40), (120, 90, 60)).save(out, format="PNG")
    return {"image": base64.b64encode(out.getvalue()).decode(), "edits": {"Smiling": 1.0}}


def _raises(exc: BaseException):
    async def call():
        raise exc
    return call()


def _serve_losses() -> list:
    from ray.exceptions import ActorDiedError, ActorUnavailableError
    from ray.serve._private.common import DeploymentID
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RayServeException

    upstream = RayServeException("Request to deployment 'Decoder' failed because an upstream actor died")
    upstream.__cause__ = ActorDiedError()
    return [ActorDiedError(), ActorUnavailableError("node lost", None), BackPressureError(512, 512),
            DeploymentUnavailableError(DeploymentID(name="Encoder", app_name="facegen")), upstream]


@pytest.mark.parametrize("index", range(5), ids=["died", "unavailable", "backpressure", "deployment", "upstream"])
def test_lost_or_full_model_replicas_are_a_json_503(index):
    """Regression: Serve's BackPressureError / DeploymentUnavailableError reached the client as Serve's
    plain-text 503, the router's wrapped upstream death as a 500; every one is now the API's JSON 503."""
    import asyncio

    from serve.editor import _call
    from serve.requests import ApiError

    with pytest.raises(ApiError) as caught:
        asyncio.run(_call(_raises(_serve_losses()[index])))
    assert caught.value.status == 503 and caught.value.code in ("unavailable", "overloaded")
    assert b'"error"' in caught.value.response().body


def test_killed_encoder_replica_is_replaced(serve_url):
    import ray
    from ray.util.state import list_actors

    body, results, stop = _body(), [], threading.Event()

    def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status = httpx.post(serve_url + "/v1/edit", json=body, timeout=45).status_code
            except httpx.TimeoutException:
                status = "hung"
            results.append((started, status, time.monotonic() - started))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    replicas = [a for a in list_actors(filters=[("state", "=", "ALIVE")])
                if "Encoder" in (a.class_name or "") and a.name]
    assert len(replicas) == 1, replicas
    killed_at = time.monotonic()
    ray.kill(ray.get_actor(replicas[0].name, namespace="serve"), no_restart=True)

    deadline = killed_at + 90
    while time.monotonic() < deadline:  # wait until requests started after the kill succeed again
        if any(start > killed_at + 1 and status == 200 for start, status, _ in results):
            break
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    statuses = {status for _, status, _ in results}
    assert "hung" not in statuses and statuses <= {200, 503}, statuses
    assert max(seconds for _, _, seconds in results) < 35  # nothing waited past the 30 s request timeout
    assert any(start > killed_at + 1 and status == 200 for start, status, _ in results), "service never resumed"
    alive = [a for a in list_actors(filters=[("state", "=", "ALIVE")]) if "Encoder" in (a.class_name or "")]
    assert alive and alive[0].name != replicas[0].name
