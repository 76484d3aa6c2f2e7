"""The model deployments: each loads one bundle and batches concurrent calls with ``@serve.batch``.

``Encoder``, ``Decoder`` and ``Classifier`` take a batch of k items per call (k images (k, 3, R, R) or k codes
(k, D)): the ingress gathers concurrent edits first (``serve/batcher.py``) and sends all their rows in one
call per hop. Serve merges calls that are already waiting into one forward pass of up to ``max_batch_rows``
rows and never waits for more (the ingress's batch already did the waiting), and each caller gets its own k
rows back. Batching is tuned live through ``user_config`` (``serve deploy`` with a new config, no restart):
the load benchmark turns it off with ``max_batch_size: 1``. Every deployment keeps a histogram of the rows
per forward pass it ran, so tests and benchmarks can see that batching really happens.

With a guide classifier (the app's ``guide``), the replicas that hold the decoder (``Decoder``, or
``FusedModels``) also run guided edits: gradient steps on the codes through the decoder and the guide
(:func:`facegen.latent.guided.guided_edit`), which need both models in one process.

``FusedModels`` loads all three models into the ingress's own replica (``fused: true`` in the app's args): no
hop between the ingress and the models, for models small enough to share a process; large ones keep the
separately scaled deployments.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
from typing import Any, Awaitable

import torch
from ray import serve

from facegen.bundle import Bundle, load_bundle
from facegen.latent.edit import residual_decoder
from facegen.latent.guided import Guide, guide_from_bundle, guided_edit
from serve.requests import ApiError

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


def batch_rows(max_batch_size: int) -> int:
    """Rows one forward pass may hold for ingress batches of ``max_batch_size`` edits (an edit decodes and
    scores two rows); 1 keeps batching off in the models too."""
    return 1 if max_batch_size <= 1 else 2 * max_batch_size


class _BatchedModel:
    """Bundle loading, live batching knobs and batch-size statistics shared by the model deployments.

    Subclasses name their ``@serve.batch`` methods in ``batched_methods``. ``generator`` is the latent model
    (encode/decode), ``scorer`` the classifier bundle (scores).
    """

    batched_methods: tuple[str, ...] = ()

    def __init__(self, bundle: str) -> None:
        self.location = bundle
        self.bundle = load_serving_bundle(bundle)
        self.model = self.bundle.model
        self.generator, self.scorer = self.model, self.bundle
        self.device = next(self.model.parameters()).device
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._counting = threading.Lock()  # passes may run in several threads (FusedModels)

    def count(self, rows: int) -> None:
        with self._counting:
            self.batch_sizes[rows] += 1

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``max_batch_rows`` (1: batching off), rows per forward pass. No batch wait: the
        ingress's adaptive batcher does the waiting, a wait here would add to every hop at low load."""
        for name in self.batched_methods:
            method = getattr(self, name)
            method.set_max_batch_size(int(config.get("max_batch_rows", batch_rows(DEFAULT_MAX_BATCH_SIZE))))
            method.set_batch_wait_timeout_s(0.0)

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


def _rows(items: list[torch.Tensor]) -> int:
    """A Serve batch's size in rows (images or codes), so ``max_batch_rows`` bounds what one forward pass
    holds; a call alone always fits, however many rows it brings (a 16-frame traverse, a whole edit batch)."""
    return 1 if len(items) == 1 else sum(len(item) for item in items)


def _batched(method):
    """``@serve.batch`` counted in rows; sizes and wait come from ``reconfigure`` (``user_config``)."""
    return serve.batch(max_batch_size=2 * DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=0.0,
                       batch_size_fn=_rows)(method)


class _Encodes:
    """Per call: images (k, 3, R, R) in [-1, 1] (+ conditions (k, C) for a conditional model) -> codes (k, D)."""

    def encode_rows(self, images: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        self.count(len(images))
        with torch.inference_mode():
            cond = None if cond is None else cond.to(self.device)
            return self.generator.encode(images.to(self.device), cond).cpu()

    @_batched
    async def encode(self, images: list[torch.Tensor], conds: list[torch.Tensor | None]) -> list[torch.Tensor]:
        sizes = [len(part) for part in images]
        cond = None if conds[0] is None else torch.cat(conds)
        return list(self.encode_rows(torch.cat(images), cond).split(sizes))


class _Decodes:
    """Per call: codes (k, D) -> images (k, 3, R, R) in [-1, 1]."""

    def decode_rows(self, codes: torch.Tensor) -> torch.Tensor:
        self.count(len(codes))
        with torch.inference_mode():
            return self.generator.decode(codes.to(self.device)).clamp(-1, 1).cpu()

    @_batched
    async def decode(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.decode_rows(torch.cat(codes)).split([len(part) for part in codes]))


class _Guides:
    """Guided edits where the decoder is: per call, codes (k, D) with one {attribute: strength} per row and the
    codes' spread (D,) -> edited codes (k, D). Rows asking for the same edit are steered together."""

    guide: Guide | None = None

    def load_guide(self, location: str | None) -> None:
        self.guide = guide_from_bundle(location, map_location=self.device) if location else None

    def guide_rows(self, codes: torch.Tensor, edits: list[dict[str, float]], scale: torch.Tensor,
                   originals: torch.Tensor | None = None, residual: list[bool] | None = None) -> torch.Tensor:
        """``originals`` (k, 3, R, R) with ``residual[i]`` true: row i is steered as the picture it will show,
        the original plus the decode's change (:func:`facegen.latent.edit.residual_decoder`)."""
        if self.guide is None:
            raise ValueError("this deployment has no guide classifier: guided edits need the app's 'guide'")
        codes, scale = codes.to(self.device), scale.to(self.device)
        residual = residual or [False] * len(edits)
        edited = codes.clone()
        groups: dict[tuple, list[int]] = collections.defaultdict(list)
        for i, row in enumerate(edits):
            groups[(tuple(sorted(row.items())), residual[i])].append(i)
        for (edit, composed), rows in groups.items():
            decode = None
            if composed:
                with torch.no_grad():  # not inference_mode: the steps below need autograd through the decoder
                    recon = self.generator.decode(codes[rows])
                decode = residual_decoder(self.generator.decode, originals[rows].to(self.device), recon)
            edited[rows] = guided_edit(self.generator, self.guide, codes[rows], dict(edit), scale, decode=decode)
        return edited.cpu()

    async def guided(self, codes: torch.Tensor, edits: list[dict[str, float]], scale: torch.Tensor,
                     originals: torch.Tensor | None = None, residual: list[bool] | None = None) -> torch.Tensor:
        # Tens of decoder + guide passes: in a worker thread, so the replica keeps answering decode calls.
        return await asyncio.to_thread(self.guide_rows, codes, edits, scale, originals, residual)


class _Scores:
    """Per call: images (k, 3, R, R) in [-1, 1], any R -> attribute probabilities (k, A) in the classifier
    bundle's attribute order. Images are resized to the classifier's own resolution, so a 64 px generator can
    be scored by a classifier trained at another size."""

    def score_rows(self, images: torch.Tensor) -> torch.Tensor:
        self.count(len(images))
        batch = images.to(self.device)
        size = int(self.scorer.meta.get("resolution", batch.shape[-1]))
        if batch.shape[-1] != size:
            batch = torch.nn.functional.interpolate(batch, size=(size, size), mode="bilinear",
                                                    align_corners=False, antialias=True)
        with torch.inference_mode():
            return self.scorer.model.predict_proba(batch).float().cpu()

    @_batched
    async def scores(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.score_rows(torch.cat(images)).split([len(part) for part in images]))


_MODEL_OPTIONS = {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 32,
                  "max_surge_percent": ROLLOUT_SURGE_PERCENT}


@serve.deployment(**_MODEL_OPTIONS)
class Encoder(_Encodes, _BatchedModel):
    batched_methods = ("encode",)


@serve.deployment(**_MODEL_OPTIONS)
class Decoder(_Decodes, _Guides, _BatchedModel):
    batched_methods = ("decode",)

    def __init__(self, bundle: str, guide: str | None = None) -> None:
        super().__init__(bundle)
        self.load_guide(guide)


@serve.deployment(**_MODEL_OPTIONS)
class Classifier(_Scores, _BatchedModel):
    batched_methods = ("scores",)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "attributes": list(self.model.attribute_names)}


class FusedModels(_Encodes, _Decodes, _Guides, _Scores, _BatchedModel):
    """Generator, classifier (and guide) loaded in the ingress's own replica (``fused: true``): no hop at all
    between the ingress and the models. ``remote(name)`` stands in for a DeploymentHandle method: the forward
    pass runs in a worker thread (torch releases the GIL), so the ingress keeps reading requests meanwhile, and
    up to ``passes`` of them run at once, each on one intra-op thread: two batches in the models at a time use
    both cores of a small machine (one at a time left the second core mostly idle, ``bench/serve_load.py``)."""

    def __init__(self, bundle: str, classifier: str | None = None, guide: str | None = None, passes: int = 2) -> None:
        super().__init__(bundle)
        self.scorer = load_serving_bundle(classifier) if classifier else None
        self.load_guide(guide)
        self._passes = threading.Semaphore(passes)

    def _pass(self, method: str, *args):
        with self._passes:
            return getattr(self, method)(*args)

    def remote(self, method: str) -> "_LocalMethod":
        return _LocalMethod(self, {"encode": "encode_rows", "decode": "decode_rows", "scores": "score_rows",
                                   "guided": "guide_rows"}[method])

    async def run(self, method: str, *args) -> torch.Tensor:
        """A model call's bad input is a 400, as a replica's ValueError/TypeError is through a handle."""
        try:
            return await asyncio.to_thread(self._pass, method, *args)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, "bad_request", str(exc).splitlines()[0]) from None


class _LocalMethod:
    """``handle.method.remote(rows)`` for a model in this process: an awaitable of the method's rows."""

    def __init__(self, models: FusedModels, method: str) -> None:
        self.models, self.method = models, method

    def remote(self, *args) -> Awaitable[torch.Tensor]:
        return self.models.run(self.method, *args)


class LocalHandle:
    """A DeploymentHandle look-alike over :class:`FusedModels`: ``.encode``/``.decode``/``.scores``/``.guided``."""

    def __init__(self, models: FusedModels) -> None:
        self.models = models

    def __getattr__(self, method: str) -> _LocalMethod:
        if method in ("encode", "decode", "scores", "guided"):
            return self.models.remote(method)
        raise AttributeError(method)
