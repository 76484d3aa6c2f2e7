"""The model deployments: each loads one bundle and batches concurrent requests with ``@serve.batch``.

``Encoder``, ``Decoder`` and ``Classifier`` take a small batch of k items per call (k images (k, 3, R, R) or
k codes (k, D)), so one request sends all its images in one hop: an edit decodes the original and the edited
code in one call and scores both in one call. Serve gathers concurrent calls into a batch of up to
``max_batch_size`` calls, the model runs once on all their rows, and each caller gets its own k rows back.
Batching is tuned live through ``user_config`` (``serve deploy`` with a new config, no restart): the load
benchmark turns it off with ``max_batch_size: 1``. Every deployment keeps a histogram of the rows per forward
pass it ran, so tests and benchmarks can see that batching really happens.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import torch
from ray import serve

from facegen.bundle import Bundle, load_bundle

# Rolling updates start the new replicas before the old ones stop. With Serve's default of 0 a one-replica
# deployment has no replica for seconds and the old ingress's in-flight requests hang until it is killed.
ROLLOUT_SURGE_PERCENT = 100
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_BATCH_WAIT_S = 0.01


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_serving_bundle(location: str) -> Bundle:
    """Load a bundle for inference on this replica's device (a fractional GPU when Serve gave one)."""
    # Replicas get a fraction of a CPU: one intra-op thread each keeps them from fighting over cores.
    torch.set_num_threads(int(os.environ.get("FACEGEN_SERVE_THREADS", "1")))
    return load_bundle(location, map_location=_device())


class _BatchedModel:
    """Bundle loading, live batching knobs and batch-size statistics shared by the three deployments.

    Subclasses name their ``@serve.batch`` methods in ``batched_methods``.
    """

    batched_methods: tuple[str, ...] = ()

    def __init__(self, bundle: str) -> None:
        self.location = bundle
        self.bundle = load_serving_bundle(bundle)
        self.model = self.bundle.model
        self.device = next(self.model.parameters()).device
        self.batch_sizes: collections.Counter[int] = collections.Counter()

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``max_batch_size`` (1 turns batching off) and ``batch_wait_timeout_s``."""
        for name in self.batched_methods:
            method = getattr(self, name)
            method.set_max_batch_size(int(config.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)))
            method.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_S)))

    def _gather(self, parts: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """The calls of one Serve batch as one model batch: (sum k, ...) on the device, and each call's k."""
        sizes = [len(part) for part in parts]
        self.batch_sizes[sum(sizes)] += 1
        return torch.cat(parts).to(self.device), sizes

    def stats(self) -> dict[str, Any]:
        """Forward passes so far: ``{"batches": B, "items": rows, "max_batch_size_seen": most rows in one
        pass, "histogram": {rows: passes}}``."""
        return {"bundle": self.location, "batches": sum(self.batch_sizes.values()),
                "items": sum(k * v for k, v in self.batch_sizes.items()),
                "max_batch_size_seen": max(self.batch_sizes, default=0),
                "histogram": {str(k): v for k, v in sorted(self.batch_sizes.items())}}

    def reset_stats(self) -> None:
        self.batch_sizes.clear()

    def info(self) -> dict[str, Any]:
        """What the ingress needs to describe this model without loading it again."""
        return {"bundle": self.location, "family": self.bundle.config.family,
                "resolution": int(self.bundle.meta.get("resolution", 0)), "device": str(self.device)}


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32,
                  max_surge_percent=ROLLOUT_SURGE_PERCENT)
class Encoder(_BatchedModel):
    """Per call: images (k, 3, R, R) in [-1, 1] (+ conditions (k, C) for a conditional model) -> codes (k, D)."""

    batched_methods = ("encode",)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def encode(self, images: list[torch.Tensor], conds: list[torch.Tensor | None]) -> list[torch.Tensor]:
        batch, sizes = self._gather(images)
        cond = None if conds[0] is None else torch.cat(conds).to(self.device)
        with torch.inference_mode():
            codes = self.model.encode(batch, cond)
        return list(codes.cpu().split(sizes))


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32,
                  max_surge_percent=ROLLOUT_SURGE_PERCENT)
class Decoder(_BatchedModel):
    """Per call: codes (k, D) -> images (k, 3, R, R) in [-1, 1]."""

    batched_methods = ("decode",)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def decode(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        batch, sizes = self._gather(codes)
        with torch.inference_mode():
            images = self.model.decode(batch)
        return list(images.clamp(-1, 1).cpu().split(sizes))


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32,
                  max_surge_percent=ROLLOUT_SURGE_PERCENT)
class Classifier(_BatchedModel):
    """Per call: images (k, 3, R, R) in [-1, 1], any R -> attribute probabilities (k, A) in the bundle's
    attribute order.

    Images are resized to the classifier's own resolution, so a 64 px generator can be scored by a classifier
    trained at another size.
    """

    batched_methods = ("scores",)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "attributes": list(self.model.attribute_names)}

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def scores(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        batch, sizes = self._gather(images)
        size = int(self.bundle.meta.get("resolution", batch.shape[-1]))
        if batch.shape[-1] != size:
            batch = torch.nn.functional.interpolate(batch, size=(size, size), mode="bilinear",
                                                    align_corners=False, antialias=True)
        with torch.inference_mode():
            probabilities = self.model.predict_proba(batch)
        return list(probabilities.float().cpu().split(sizes))
