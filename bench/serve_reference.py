"""The reference ``bench/serve_load.py`` measures Serve against: the same edit in this process, without Serve,
and the CPU a request costs (this process's and the whole box's)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import statistics
import time


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def photo_b64(seed: int) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (96, 96), (60 + seed % 150, 120, 90)).save(out, format="JPEG")
    return base64.b64encode(out.getvalue()).decode()


def cpu_seconds() -> tuple[float, float]:
    """(this process's CPU seconds, the whole box's busy CPU seconds from /proc/stat): where the client and
    everything else on the box spend the cores (0 for the box where /proc is not there)."""
    busy = 0.0
    if os.path.exists("/proc/stat"):
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    return time.process_time(), busy


def wait_for_quiet(busy_cores: float = 0.25, max_wait_s: float = 90.0) -> float:
    """Wait until the box's other work falls below ``busy_cores`` (another run's Ray still exiting, another job:
    a reference measured beside them is slow), at most ``max_wait_s``; returns the busy cores of the last second
    (0 where /proc is not there)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = cpu_seconds()[1]
        time.sleep(1.0)
        busy = cpu_seconds()[1] - before
        if busy < busy_cores or time.monotonic() > deadline:
            return busy


def step_costs(bundle: str, classifier: str | None, requests: int = 64) -> dict[str, float]:
    """Median ms of each step of one edit in this process, one thread: what a hop would cost with no Serve."""
    import torch

    from facegen.bundle import load_bundle
    from serve.images import decode_base64_image, png_base64

    torch.set_num_threads(1)
    loaded = load_bundle(bundle)
    model, resolution = loaded.model, int(loaded.meta["resolution"])
    scorer = load_bundle(classifier).model if classifier else None
    text = photo_b64(0)
    steps: dict[str, list[float]] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        steps.setdefault(name, []).append(1000 * (time.perf_counter() - t0))
        return out

    part = model.condition_part()
    cond = None if part is None else torch.zeros(1, part.size)  # a conditional model's encoder needs one
    with torch.inference_mode():
        for _ in range(requests):
            image = timed("image", lambda: decode_base64_image(text, resolution, ("full",)))[None]
            code = timed("encode", lambda: model.encode(image, cond))
            decoded = timed("decode", lambda: model.decode(torch.cat([code, code]),
                                                           None if cond is None else cond.repeat(2, 1)).clamp(-1, 1))
            if scorer is not None:
                timed("scores", lambda: scorer.predict_proba(decoded))
            timed("png", lambda: [png_base64(d) for d in decoded])
    return {k: statistics.median(v) for k, v in steps.items()}


def in_process(bundle: str, classifier: str | None, attribute: str, batch: int, requests: int,
               codec: bool = False, threads: int = 1) -> dict:
    """The edit without Serve, ``batch`` images per call, on ``threads`` intra-op threads. ``codec``: bytes in,
    bytes out, as a request is: each upload decoded from its base64 JPEG inside the measured loop and both pictures
    encoded as the service encodes them (PNG, base64); without it the uploads are decoded up front and nothing is
    encoded."""
    import torch

    from facegen.bundle import load_bundle
    from facegen.latent.edit import edit
    from serve.catalog import ModelCatalog
    from serve.edits import read_conditions
    from serve.images import decode_base64_image, png_base64_rows

    torch.set_num_threads(threads)
    catalog = ModelCatalog(bundle, classifier)  # what the service loads: model, directions, condition slots
    scorer = load_bundle(classifier).model.eval() if classifier else None
    resolution = catalog.resolution
    uploads = [photo_b64(i) for i in range(requests)]
    decoded = None if codec else torch.stack([decode_base64_image(u, resolution, ("full",)) for u in uploads])

    async def scores(batch_images: torch.Tensor) -> torch.Tensor:
        return scorer.predict_proba(batch_images)

    async def run() -> list[float]:
        latencies = []
        for start in range(0, requests, batch):
            t0 = time.perf_counter()
            chunk = decoded[start:start + batch] if decoded is not None else torch.stack(
                [decode_base64_image(u, resolution, ("full",)) for u in uploads[start:start + batch]])
            # A conditional model's condition, read by the classifier as the service's condition hop reads it.
            cond = await read_conditions(catalog, scores if scorer is not None else None, chunk)
            same_size = scorer is None or scorer.config.resolution == resolution
            result = edit(catalog.generator, chunk, {attribute: 1.5}, directions=catalog.directions.get("mean_diff"),
                          cond=cond, scorer=scorer if same_size else None)
            if codec:
                png_base64_rows(result.images)
                png_base64_rows(result.reconstructions)
            latencies.append(time.perf_counter() - t0)
        return latencies

    started, cpu = time.perf_counter(), cpu_seconds()
    with torch.inference_mode():
        latencies = asyncio.run(run())
    elapsed, (own_cpu, box_cpu) = time.perf_counter() - started, cpu_seconds()
    return {"p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * percentile(latencies, 0.99),
            "rps": requests / elapsed, "failures": 0, "client_cpu_ms": 1000 * (own_cpu - cpu[0]) / requests,
            "box_cpu_ms": 1000 * (box_cpu - cpu[1]) / requests}
