"""The ``Editor`` ingress: the versioned HTTP API and the web page, composing the model deployments.

An edit is ``Encoder.encode`` -> latent arithmetic here (:func:`facegen.latent.edit.edit_codes`, the same code
the analysis and augmentation jobs use) -> ``Decoder.decode`` of the unedited and edited codes (one call) ->
the ``Classifier``'s scores of both (one call). Each hop is a DeploymentHandle call, so concurrent requests
meet in the deployments' batches; a request sends all its images in one call because each hop, not the
model, is what a request costs most on a small CPU machine (see ``bench/serve_load.py``). The ingress holds
the generator bundle too, on CPU, for what is cheap and needs no batching: latent slots, attribute
directions, and codes drawn from the prior for ``generate``/``traverse``.
"""

# No `from __future__ import annotations`: Serve re-creates the routes in the replica, where FastAPI must
# resolve the parameter annotations (Request) as real types, not strings.

import base64
import os
import time
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RayServeException
from starlette.exceptions import HTTPException as StarletteHTTPException

from facegen.latent.edit import EDIT_METHODS, MAX_STRENGTH, edit_codes, latent_slots
from facegen.latent.guided import GUIDED
from serve.batcher import AdaptiveBatcher
from serve.catalog import ModelCatalog
from serve.deployments import (DEFAULT_BATCH_WAIT_S, DEFAULT_MAX_BATCH_SIZE, ROLLOUT_SURGE_PERCENT, FusedModels,
                               LocalHandle)
from serve.edits import EditSpec, check_edit, edit_batch, named, read_conditions, server_timing
from serve.images import MAX_BYTES, MAX_PIXELS, png_base64
from serve.requests import (ApiError, error_response, get_bool, get_int, get_number_map, get_str, get_str_list,
                            image_from, parse_request)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
MAX_GENERATE = 16
MAX_TRAVERSE_STEPS = 16
API_VERSION = "v1"

app = FastAPI(title="facegen editing API", version=API_VERSION,
              description="Edit, classify, reconstruct and generate faces with facegen model bundles.")


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(422, "invalid_request", f"{where}: {first.get('msg')}")


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _call(call) -> Any:
    """Await a DeploymentHandle call; a replica lost mid-request (its node too) or a model deployment that
    cannot take the request now is a JSON 503 the client may retry (Serve's own answer to the last two would
    be a plain-text 503; a missing handler, a 500)."""
    try:
        return await call
    except BackPressureError:
        raise ApiError(503, "overloaded", "the model replicas' queues are full; retry the request") from None
    except DeploymentUnavailableError:
        raise ApiError(503, "unavailable", "a model deployment is unavailable; retry the request") from None
    except RayServeException as exc:  # the router's wrapper of an upstream actor's death
        if isinstance(exc.__cause__, RayActorError):
            raise ApiError(503, "unavailable", "a model replica was lost; retry the request") from None
        raise
    except (RayActorError, RayTaskError) as exc:
        if isinstance(exc, RayTaskError) and isinstance(exc.cause, (ValueError, TypeError)):
            raise ApiError(400, "bad_request", str(exc.cause).splitlines()[0]) from None
        raise ApiError(503, "unavailable", "a model replica was lost; retry the request") from None


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, max_queued_requests=256,
                  max_surge_percent=ROLLOUT_SURGE_PERCENT)
@serve.ingress(app)
class Editor:
    """HTTP ingress. encoder / decoder / classifier: DeploymentHandles (classifier may be None); with
    ``fused`` they are None and the models are loaded here (``FusedModels``), called without a hop."""

    def __init__(self, encoder, decoder, classifier, bundle: str, classifier_bundle: str | None = None,
                 max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, align: bool = True,
                 fused: bool = False, guide_bundle: str | None = None, fused_passes: int = 2) -> None:
        if fused:
            self.models = FusedModels(bundle, classifier_bundle, guide_bundle, fused_passes)
            encoder = decoder = LocalHandle(self.models)
            classifier = decoder if classifier_bundle else None
        self.encoder, self.decoder, self.classifier = encoder, decoder, classifier
        self.catalog = ModelCatalog(bundle, classifier_bundle, guide_bundle)
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.align = align  # for requests that do not say: find and frame the face like the training faces
        self.fused = fused
        # Concurrent edits share one model call per hop; user_config retunes it live (reconfigure).
        self.edits = AdaptiveBatcher(self._edit_batch, DEFAULT_MAX_BATCH_SIZE, DEFAULT_BATCH_WAIT_S)

    def reconfigure(self, config: dict) -> None:
        """``user_config``: ``max_batch_size`` (edits per batch, 1 = off) and ``batch_wait_timeout_s`` (the
        most a batch waits for requests already on their way)."""
        self.edits.configure(int(config.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)),
                             float(config.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_S)))

    @app.get("/v1/batches", include_in_schema=False)
    async def batches(self) -> dict:
        """How many edit batches of each size the ingress ran (for tests and benchmarks)."""
        return {"sizes": {str(k): v for k, v in sorted(self.edits.sizes.items())}, "fused": self.fused,
                "model_passes": self.models.stats()["histogram"] if self.fused else None}

    # ---- pages and metadata ----

    @app.get("/", include_in_schema=False)
    async def page(self) -> FileResponse:
        return FileResponse(os.path.join(STATIC, "index.html"), media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(self, name: str) -> FileResponse:
        path = os.path.join(STATIC, os.path.basename(name))
        if not os.path.isfile(path):
            raise ApiError(404, "not_found", f"no static file {name!r}")
        return FileResponse(path)

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "model": self.catalog.name}

    @app.get(f"/{API_VERSION}/models")
    async def models(self) -> dict:
        return self.catalog.describe()

    @app.get(f"/{API_VERSION}/attributes")
    async def attributes(self) -> dict:
        return {"model": self.catalog.name, "domain": self.catalog.domain(), "attributes": self.catalog.editable(),
                "classifier_attributes": self.catalog.classifier_attributes,
                "methods": self.catalog.methods(), "default_method": self.catalog.default_method(),
                "guide_attributes": self.catalog.guide_attributes, "max_strength": MAX_STRENGTH,
                "align_default": self.align,
                "edit_reliability": self.catalog.showcase.reliability,
                "edit_reliability_source": self.catalog.showcase.reliability_source}

    @app.get(f"/{API_VERSION}/gallery")
    async def gallery(self) -> dict:
        """Held-out faces of the model's own domain (its training data's test split) as base64 PNGs: already
        framed like the training faces, so send them back with ``align: false``."""
        show = self.catalog.showcase
        return {"model": self.catalog.name, "training": show.training, "note": show.note,
                "faces": [base64.b64encode(face).decode("ascii") for face in show.faces]}

    # ---- model calls ----

    async def _image(self, request: Request):
        parsed = await parse_request(request, self.max_bytes)
        return parsed, self._decode_upload(parsed)

    def _decode_upload(self, parsed) -> torch.Tensor:
        """The upload as model input: its face found and framed like the training faces unless ``align`` is
        false (a photo without a face is then a 422), else its centre square."""
        frame = self.catalog.showcase.frame if get_bool(parsed.fields, "align", self.align) else None
        return image_from(parsed, self.catalog.resolution, self.catalog.crop, self.max_bytes, self.max_pixels,
                          frame)

    async def _encode(self, image: torch.Tensor) -> torch.Tensor:
        """image (3, R, R) -> code (D,)."""
        return (await self._encode_rows(image[None], await self._conditions(image[None])))[0]

    async def _encode_rows(self, images: torch.Tensor, conds: torch.Tensor | None) -> torch.Tensor:
        return await _call(self.encoder.encode.remote(images, conds))

    async def _score_rows(self, images: torch.Tensor) -> torch.Tensor:
        return await _call(self.classifier.scores.remote(images))

    async def _conditions(self, images: torch.Tensor) -> torch.Tensor | None:
        """A conditional encoder's conditions for k uploads: what the classifier sees in them (one call)."""
        scores = self._score_rows if self.classifier is not None else None
        return await read_conditions(self.catalog, scores, images)

    async def _scores(self, images: torch.Tensor) -> list[dict[str, float] | None]:
        """images (k, 3, R, R) -> k {attribute: probability} (None each without a classifier)."""
        if self.classifier is None:
            return [None] * len(images)
        results = await _call(self.classifier.scores.remote(images))
        return [named(results, i, self.catalog.classifier_attributes) for i in range(len(results))]

    async def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (k, D) -> images (k, 3, R, R)."""
        return await _call(self.decoder.decode.remote(codes))

    async def _guided(self, codes, edits: list[dict[str, float]], originals, residual: list[bool]) -> torch.Tensor:
        """codes (k, D) steered where the decoder is; uploads (k, 3, R, R) go along for residual rows only."""
        return await _call(self.decoder.guided.remote(codes, edits, self.catalog.code_scale(),
                                                      originals if any(residual) else None, residual))

    async def _edit_batch(self, items: list[tuple[torch.Tensor, EditSpec]]) -> list:
        """The adaptive batcher's work: k (image, spec) -> k (EditRows, row) or an ApiError for a bad row."""
        return await edit_batch(items, self.catalog, self._encode_rows, self._decode,
                                self._score_rows if self.classifier is not None else None,
                                self._guided if self.catalog.guided() else None)

    # ---- endpoints ----

    @app.post(f"/{API_VERSION}/edit")
    async def edit(self, request: Request) -> JSONResponse:
        """Image + ``edits`` {attribute: strength} (+ ``keep``, ``method``, ``residual``: the upload plus what
        the edit changed in the decode) -> edited PNG and scores.

        Concurrent edits are batched here (``self.edits``); the ``Server-Timing`` header says where this
        request's time went (ms). A JSONResponse of plain values: FastAPI's encoder costs ~0.1 ms a request."""
        started = time.perf_counter()
        with self.edits.expect():
            parsed = await parse_request(request, self.max_bytes)
            read = time.perf_counter()
            image = self._decode_upload(parsed)
            decoded = time.perf_counter()
            edits = get_number_map(parsed.fields, "edits")
            if not edits:
                raise ApiError(400, "bad_field", "'edits' is empty: give at least one {attribute: strength}")
            keep = get_str_list(parsed.fields, "keep")
            method = get_str(parsed.fields, "method", self.catalog.default_method(), (*EDIT_METHODS, GUIDED))
            name = None if method == GUIDED else self.catalog.direction_method() if method == "conditional" else method
            residual = get_bool(parsed.fields, "residual", False)
            check_edit(self.catalog, edits, keep, method)
            submitted = time.perf_counter()
            (rows, i), waited = await self.edits.submit((image, EditSpec(edits, keep, method, name, residual)))
        answered, names = time.perf_counter(), self.catalog.classifier_attributes
        body = {"model": self.catalog.name, "method": method, "edits": edits, "keep": keep, "residual": residual,
                "image": rows.edited_png[i], "reconstruction": rows.reconstruction_png[i],
                "scores_before": named(rows.scores_before, i, names),
                "scores_after": named(rows.scores_after, i, names)}
        return JSONResponse(body, headers={"Server-Timing": server_timing(
            {"body": read - started, "image": decoded - read, "check": submitted - decoded, "wait": waited,
             **rows.timings, "reply": time.perf_counter() - answered, "total": time.perf_counter() - started})})

    @app.post(f"/{API_VERSION}/classify")
    async def classify(self, request: Request) -> dict:
        if self.classifier is None:
            raise ApiError(404, "no_classifier", "this deployment serves no classifier bundle")
        _, image = await self._image(request)
        (scores,) = await self._scores(image[None])
        return {"model": self.catalog.classifier_name, "scores": scores}

    @app.post(f"/{API_VERSION}/reconstruct")
    async def reconstruct(self, request: Request) -> dict:
        _, image = await self._image(request)
        code = await self._encode(image)
        (reconstruction,) = await self._decode(code[None])
        return {"model": self.catalog.name, "image": png_base64(reconstruction), "input": png_base64(image)}

    @app.post(f"/{API_VERSION}/generate")
    async def generate(self, request: Request) -> dict:
        """``n`` (1..16) new faces from the prior (or the AE's fitted sampler), ``seed``, optional ``attributes``
        setting latent slots (a conditional model's condition, InfoGAN codes)."""
        parsed = await parse_request(request, self.max_bytes)
        n = get_int(parsed.fields, "n", 4, 1, MAX_GENERATE)
        seed = get_int(parsed.fields, "seed", 0, 0, 2**31 - 1)
        slots = get_number_map(parsed.fields, "attributes")
        codes = self.catalog.prior_codes(n, seed)
        try:
            if slots:
                unknown = sorted(set(slots) - set(latent_slots(self.catalog.generator)))
                if unknown:
                    raise ValueError(f"unknown attribute {unknown[0]!r}: generate sets only latent slots "
                                     f"({', '.join(latent_slots(self.catalog.generator)) or 'none'})")
                codes = edit_codes(self.catalog.generator, codes, slots, conditions=self.catalog.conditions)
        except ValueError as exc:
            raise ApiError(400, "bad_edit", str(exc)) from None
        images = await self._decode(codes)
        return {"model": self.catalog.name, "seed": seed, "images": [png_base64(i) for i in images]}

    @app.post(f"/{API_VERSION}/traverse")
    async def traverse(self, request: Request) -> dict:
        """Vary latent ``dimension`` over ``range`` [lo, hi] in ``steps`` from an image's code (or a prior
        sample drawn with ``seed``) -> one row of images as a PNG strip plus the frames."""
        parsed = await parse_request(request, self.max_bytes)
        width = self.catalog.latent_width
        dimension = get_int(parsed.fields, "dimension", None, 0, width - 1)
        steps = get_int(parsed.fields, "steps", 8, 2, MAX_TRAVERSE_STEPS)
        lo, hi = self.catalog.check_range(parsed.fields.get("range", [-3.0, 3.0]))
        if parsed.image is not None:
            code = await self._encode(self._decode_upload(parsed))
        else:
            code = self.catalog.prior_codes(1, get_int(parsed.fields, "seed", 0, 0, 2**31 - 1))[0]
        values = torch.linspace(lo, hi, steps)
        codes = code.repeat(steps, 1)
        codes[:, dimension] = values
        frames = await self._decode(codes)  # (steps, 3, R, R)
        strip = torch.cat(list(frames), dim=2)  # (3, R, steps * R)
        return {"model": self.catalog.name, "dimension": dimension, "values": values.tolist(),
                "image": png_base64(strip), "frames": [png_base64(f) for f in frames]}

