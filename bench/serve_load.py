"""Load sweep of POST /v1/edit: p50/p99 latency and throughput per concurrency, Serve batching on and off,
beside the same model called in-process, all measured in one run.

    python bench/serve_load.py --bundle out/demo/runs/vae_demo64/bundle \
        --classifier out/demo/runs/classifier_synth64/bundle --concurrency 1,8,32 --requests 128

It starts a local Ray and the app on 127.0.0.1 (stop any other local Ray first), deploys the app once with
``max_batch_size`` 16 and once with 1 (batching off), and prints one table. The in-process rows run
``facegen.latent.edit.edit`` (encode, move, decode twice, score twice) in this process: one image per call
(what a request costs without any serving) and 32 images per call (what batching can win at best).
With batching on it also prints what a request costs by route at the top concurrency: ``GET /healthz`` (the
proxy and the ingress alone), ``POST /v1/classify`` (one model hop) and ``POST /v1/edit`` (three hops).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def photo_b64(seed: int) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (96, 96), (60 + seed % 150, 120, 90)).save(out, format="JPEG")
    return base64.b64encode(out.getvalue()).decode()


ROUTES = {  # what one request of each kind costs the app: its route and the body for request i
    "GET /healthz": lambda i, attribute: None,
    "POST /v1/classify": lambda i, attribute: {"image": photo_b64(i)},
    "POST /v1/edit": lambda i, attribute: {"image": photo_b64(i), "edits": {attribute: 1.5}},
}


async def sweep_http(url: str, attribute: str, concurrency: int, requests: int,
                     route: str = "POST /v1/edit") -> dict:
    import httpx

    method, path = route.split(" ")
    bodies = [ROUTES[route](i, attribute) for i in range(requests)]
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(client) -> None:
        nonlocal failures
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            response = await client.request(method, url + path, json=body)
            latencies.append(time.perf_counter() - started)
            failures += response.status_code != 200

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"p50_ms": 1000 * percentile(latencies, 0.5), "p99_ms": 1000 * percentile(latencies, 0.99),
            "rps": requests / elapsed, "failures": failures}


def in_process(bundle: str, classifier: str | None, attribute: str, batch: int, requests: int) -> dict:
    import torch

    from facegen.bundle import load_bundle
    from facegen.latent.edit import edit
    from facegen.latent.store import stored_directions
    from serve.images import decode_base64_image

    torch.set_num_threads(1)
    loaded = load_bundle(bundle)
    directions = stored_directions(loaded.extras, "mean_diff")
    scorer = load_bundle(classifier).model if classifier else None
    resolution = int(loaded.meta["resolution"])
    images = torch.stack([decode_base64_image(photo_b64(i), resolution, ("full",)) for i in range(requests)])
    latencies = []
    started = time.perf_counter()
    for start in range(0, requests, batch):
        t0 = time.perf_counter()
        edit(loaded.model, images[start:start + batch], {attribute: 1.5}, directions=directions,
             scorer=scorer if scorer is None or scorer.config.resolution == resolution else None)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {"p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * percentile(latencies, 0.99),
            "rps": requests / elapsed, "failures": 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="latent-model bundle with stored directions")
    parser.add_argument("--classifier", default=None, help="attribute-classifier bundle (optional)")
    parser.add_argument("--attribute", default="Smiling", help="attribute to edit (default Smiling)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client concurrencies")
    parser.add_argument("--requests", type=int, default=128, help="requests per measurement (default 128)")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    import ray
    from ray import serve

    from serve.app import build_app

    ray.init(num_cpus=args.num_cpus, include_dashboard=True, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port, "request_timeout_s": 120})
    url, rows, ladder = f"http://127.0.0.1:{args.port}", [], []
    try:
        for label, max_batch in (("serve, batching on (16)", 16), ("serve, batching off", 1)):
            # align False: the load's flat-colour photos have no face, and the sweep measures Serve's hops.
            serve.run(build_app({"bundle": args.bundle, "classifier": args.classifier, "align": False,
                                 "max_batch_size": max_batch, "batch_wait_timeout_s": 0.01}),
                      name="facegen", route_prefix="/")
            asyncio.run(sweep_http(url, args.attribute, 4, 16))  # warm-up: replicas, JIT paths, connections
            for level in levels:
                rows.append((label, level, asyncio.run(sweep_http(url, args.attribute, level, args.requests))))
                print(f"  {label:<26} c={level:<3} {rows[-1][2]}", file=sys.stderr, flush=True)
            if max_batch > 1:  # the cost ladder: the framework alone, one model hop, a whole edit
                for route in ("GET /healthz", "POST /v1/classify"):
                    ladder.append((route, max(levels),
                                   asyncio.run(sweep_http(url, args.attribute, max(levels), args.requests, route))))
            serve.delete("facegen")
    finally:
        serve.shutdown()
        ray.shutdown()
    rows.append(("in-process, 1 image/call", 1, in_process(args.bundle, args.classifier, args.attribute, 1,
                                                            args.requests)))
    rows.append(("in-process, 32 images/call", 32, in_process(args.bundle, args.classifier, args.attribute, 32,
                                                               args.requests)))

    print(f"\nPOST /v1/edit, {args.requests} requests per row, bundle {args.bundle}")
    print(f"{'setup':<28}{'conc.':>6}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>9}{'failed':>8}")
    for label, level, r in rows:
        print(f"{label:<28}{level:>6}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['rps']:>9.1f}{r['failures']:>8}")
    by = {(label, level): r for label, level, r in rows}
    top = max(levels)
    if ladder:
        print("\nbatching on, what a request costs by route:")
        for label, level, r in ladder + [("POST /v1/edit", top, by[("serve, batching on (16)", top)])]:
            print(f"{label:<28}{level:>6}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['rps']:>9.1f}"
                  f"{r['failures']:>8}")
    on, off = by.get(("serve, batching on (16)", top)), by.get(("serve, batching off", top))
    solo = by[("in-process, 1 image/call", 1)]
    if on and off:
        print(f"\nthroughput at c={top}: batching on / off = {on['rps'] / off['rps']:.2f}x; "
              f"serve (batching on) / in-process 1 image per call = {on['rps'] / solo['rps']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
