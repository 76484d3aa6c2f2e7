"""The Serve application: ``serve run serve/config.yaml`` or ``serve.run(build_app({...}))``.

``build_app`` is a typed application builder: the arguments (which bundles, batching, caps) come from the
``args:`` of an application in ``serve/config.yaml`` or from a dict, and are validated before anything starts.
A new bundle is rolled out by editing ``args.bundle`` and running ``serve deploy``: every deployment has
``max_surge_percent`` 100, so Serve starts the new replicas before it stops the old ones and requests keep
being answered (``tests/serve/test_rollout.py``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator
from ray.serve import Application

from facegen.io import absolute_path
from serve.deployments import DEFAULT_BATCH_WAIT_S, DEFAULT_MAX_BATCH_SIZE, Classifier, Decoder, Encoder, batch_rows
from serve.editor import Editor
from serve.images import MAX_BYTES, MAX_PIXELS


class AppArgs(BaseModel):
    """bundle: a latent-model bundle (ae, vae, cvae, infogan, began), local path or URI.
    classifier: an attribute-classifier bundle for scores (optional; without it edits carry no scores).
    guide: an attribute-classifier bundle that steers ``guided`` edits (optional; then the default method). It
        must not be ``classifier``: scores from the model an edit was pushed against would only confirm the push.
    max_batch_size: edits the ingress gathers into one batch (one model call per hop for all of them), and
        twice that many rows per forward pass in the model deployments; 1 turns batching off.
    batch_wait_timeout_s: the most a batch waits for requests already on their way to the ingress (a lone
        request never waits: the wait adapts to the load, ``serve/batcher.py``).
    max_bytes / max_pixels: caps on an uploaded image's size in bytes and in pixels.
    gpus_per_replica: fraction of a GPU for each model replica (0: CPU); several replicas share one GPU.
    align: whether an upload's face is found and framed like the training faces when the request does not say
        (``align`` field); false suits clients that send crops already in the model's own framing.
    """

    bundle: str
    classifier: str | None = None
    guide: str | None = None
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, ge=1, le=256)
    batch_wait_timeout_s: float = Field(DEFAULT_BATCH_WAIT_S, ge=0, le=1)
    max_bytes: int = Field(MAX_BYTES, ge=1024)
    max_pixels: int = Field(MAX_PIXELS, ge=64 * 64)
    gpus_per_replica: float = Field(0.0, ge=0, le=1)
    align: bool = True
    fused: bool = False
    """The ingress replica loads encoder, decoder and classifier itself (``FusedModels``): no hop between the
    ingress and the models, scaled with the ingress; for small models on few cores. False keeps separately
    scaled Encoder/Decoder/Classifier deployments, for models large enough to need their own replicas (or GPU
    share). Same HTTP API either way."""
    fused_passes: int = Field(2, ge=1, le=64)
    """With ``fused``: forward passes the ingress replica runs at once, each on one intra-op thread; 2 uses both
    cores of a 2-core machine beside the event loop."""

    @field_validator("bundle", "classifier", "guide")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # Replicas run in Ray's own working folders: a relative local path must be made absolute here.
        return absolute_path(value) if value else value

    @model_validator(mode="after")
    def _guide_is_not_the_classifier(self) -> "AppArgs":
        if self.guide and self.classifier and self.guide.rstrip("/") == self.classifier.rstrip("/"):
            raise ValueError("guide must be another classifier than 'classifier': the page's scores would only "
                             "confirm what the edit was pushed toward")
        return self


def build_app(args: dict | AppArgs) -> Application:
    """The bound application: ``Editor`` over ``Encoder``/``Decoder`` (and ``Classifier``) deployments, or
    ``Editor`` alone holding the models with ``fused``."""
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    batching = {"max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.batch_wait_timeout_s,
                "max_batch_rows": batch_rows(args.max_batch_size)}
    options = {"user_config": batching}
    if args.gpus_per_replica:
        options["ray_actor_options"] = {"num_cpus": 0.25, "num_gpus": args.gpus_per_replica}
    if args.fused:  # the ingress loads the models itself
        encoder = decoder = classifier = None
    else:
        encoder = Encoder.options(**options).bind(args.bundle)
        decoder = Decoder.options(**options).bind(args.bundle, args.guide)
        classifier = Classifier.options(**options).bind(args.classifier) if args.classifier else None
    editor = {"user_config": batching, **({"ray_actor_options": options["ray_actor_options"]}
                                           if args.fused and args.gpus_per_replica else {})}
    return Editor.options(**editor).bind(encoder, decoder, classifier, args.bundle, args.classifier, args.max_bytes,
                                         args.max_pixels, args.align, args.fused, args.guide, args.fused_passes)


def model_deployments(args: dict | AppArgs) -> tuple[str, ...]:
    """The names of the model deployments the app builds for ``args`` (the config may tune only these)."""
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    if args.fused:
        return ()
    return ("Encoder", "Decoder", "Classifier") if args.classifier else ("Encoder", "Decoder")
