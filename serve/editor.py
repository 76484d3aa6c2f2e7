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
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException

from facegen.latent.edit import EDIT_METHODS, MAX_STRENGTH, check_edits, edit_codes, latent_slots
from serve.catalog import ModelCatalog
from serve.deployments import ROLLOUT_SURGE_PERCENT
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
    """Await a DeploymentHandle call; a replica lost mid-request is a 503 the client may retry."""
    try:
        return await call
    except (RayActorError, RayTaskError) as exc:
        if isinstance(exc, RayTaskError) and isinstance(exc.cause, (ValueError, TypeError)):
            raise ApiError(400, "bad_request", str(exc.cause).splitlines()[0]) from None
        raise ApiError(503, "unavailable", "a model replica was lost; retry the request") from None


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, max_queued_requests=256,
                  max_surge_percent=ROLLOUT_SURGE_PERCENT)
@serve.ingress(app)
class Editor:
    """HTTP ingress. encoder / decoder / classifier: DeploymentHandles (classifier may be None)."""

    def __init__(self, encoder, decoder, classifier, bundle: str, classifier_bundle: str | None = None,
                 max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, align: bool = True) -> None:
        self.encoder, self.decoder, self.classifier = encoder, decoder, classifier
        self.catalog = ModelCatalog(bundle, classifier_bundle)
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.align = align  # for requests that do not say: find and frame the face like the training faces

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
                "methods": self.catalog.methods(), "max_strength": MAX_STRENGTH, "align_default": self.align,
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
        cond = await self._condition(image)
        codes = await _call(self.encoder.encode.remote(image[None], None if cond is None else cond[None]))
        return codes[0]

    async def _condition(self, image: torch.Tensor) -> torch.Tensor | None:
        """A conditional encoder's condition for an uploaded photo: what the classifier sees in it."""
        spec = self.catalog.condition
        if spec is None:
            return None
        if spec.attributes and self.classifier is not None and spec.readable_by(self.catalog):
            scores = await _call(self.classifier.scores.remote(image[None]))
            return spec.from_scores(scores[0], self.catalog.classifier_attributes)
        return torch.zeros(spec.size)

    async def _scores(self, images: torch.Tensor) -> list[dict[str, float] | None]:
        """images (k, 3, R, R) -> k {attribute: probability} (None each without a classifier)."""
        if self.classifier is None:
            return [None] * len(images)
        results = await _call(self.classifier.scores.remote(images))
        names = self.catalog.classifier_attributes
        return [{n: round(float(p), 4) for n, p in zip(names, r.tolist())} for r in results]

    async def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (k, D) -> images (k, 3, R, R)."""
        return await _call(self.decoder.decode.remote(codes))

    # ---- endpoints ----

    @app.post(f"/{API_VERSION}/edit")
    async def edit(self, request: Request) -> dict:
        """Image + ``edits`` {attribute: strength} (+ ``keep``, ``method``) -> edited PNG and scores."""
        parsed, image = await self._image(request)
        edits = get_number_map(parsed.fields, "edits")
        if not edits:
            raise ApiError(400, "bad_field", "'edits' is empty: give at least one {attribute: strength}")
        keep = get_str_list(parsed.fields, "keep")
        method = get_str(parsed.fields, "method", self.catalog.default_method(), EDIT_METHODS)
        model, directions = self.catalog.generator, self.catalog.directions_for(method)
        try:
            check_edits(model, edits, keep, method, directions)
            code = await self._encode(image)
            edited = edit_codes(model, code[None], edits, keep, method, directions)[0]
        except ValueError as exc:
            raise ApiError(400, "bad_edit", str(exc)) from None
        decoded = await self._decode(torch.stack([code, edited]))
        reconstruction, result = decoded
        before, after = await self._scores(decoded)
        return {"model": self.catalog.name, "method": method, "edits": edits, "keep": keep,
                "image": png_base64(result), "reconstruction": png_base64(reconstruction),
                "scores_before": before, "scores_after": after}

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
                codes = edit_codes(self.catalog.generator, codes, slots)
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

