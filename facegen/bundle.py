"""Self-describing model bundles: everything analysis and serving need, and nothing else.

A bundle is a folder (local or any pyarrow URI)::

    config.json     the resolved experiment config (model family and hyper-parameters included)
    weights.pt      the model's state_dict (loaded with ``weights_only=True``: no pickle from outside)
    meta.json       format version, family, resolution, label vocabularies, final metrics, loss history
    extras.pt       optional named tensors added later, e.g. attribute directions from latent analysis

On a local disk it is written to a temporary folder and renamed into place; on an object store (no folder
renames) ``meta.json`` is written last, and a bundle without it is not a bundle. Either way a reader never
sees half a bundle.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import torch

import facegen
from facegen.config import ExperimentConfig, from_dict
from facegen import io as fsio
from facegen.errors import FacegenError
from facegen.models import FaceModel, build_model

BUNDLE_FORMAT = "facegen-bundle/1"


@dataclass
class Bundle:
    """A loaded bundle: the ready model (eval mode, on ``map_location``), its config and metadata."""

    model: FaceModel
    config: ExperimentConfig
    meta: dict[str, Any]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def attribute_names(self) -> list[str]:
        return list(self.meta.get("attribute_names", []))


def _tensor_file(tensors: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buffer)
    return buffer.getvalue()


def write_bundle(dest: str, *, config: dict[str, Any], weights: dict[str, torch.Tensor],
                 meta: dict[str, Any], extras: dict[str, torch.Tensor] | None = None) -> str:
    """Write a bundle to ``dest`` (path or URI), replacing any bundle there; returns ``dest``."""
    fs, path = fsio.resolve(dest)
    files = {
        "config.json": json.dumps(config, indent=2).encode(),
        "weights.pt": _tensor_file(weights),
        "meta.json": json.dumps({"format": BUNDLE_FORMAT, "facegen_version": facegen.__version__,
                                 "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 **meta}, indent=2).encode(),
    }
    if extras:
        files["extras.pt"] = _tensor_file(extras)
    local = fs.type_name == "local"
    if not local and fsio.exists(fs, fsio.join(path, "meta.json")):
        fs.delete_file(fsio.join(path, "meta.json"))  # unmark the old bundle before overwriting it
    with (fsio.staged_folder(path) if local else contextlib.nullcontext(path)) as folder:
        for name in sorted(files, key=lambda n: n == "meta.json"):  # meta.json last
            fsio.write_atomic(fs, fsio.join(folder, name), files[name])
    return dest


def _load_tensors(fs, path: str, map_location) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(fsio.read_bytes(fs, path)), map_location=map_location, weights_only=True)


def load_bundle(location: str, map_location: str | torch.device = "cpu") -> Bundle:
    """Rebuild the model of the bundle at ``location``; a missing or foreign folder is a one-line error."""
    fs, path = fsio.resolve(location)
    try:
        meta = json.loads(fsio.read_bytes(fs, fsio.join(path, "meta.json")))
        config = from_dict(json.loads(fsio.read_bytes(fs, fsio.join(path, "config.json"))))
        weights = _load_tensors(fs, fsio.join(path, "weights.pt"), map_location)
    except FileNotFoundError as exc:
        raise FacegenError(f"{location}: not a model bundle (missing {exc.filename or 'a file'})") from None
    except (json.JSONDecodeError, RuntimeError) as exc:
        raise FacegenError(f"{location}: corrupt model bundle ({exc})") from None
    if meta.get("format") != BUNDLE_FORMAT:
        raise FacegenError(f"{location}: unsupported bundle format {meta.get('format')!r}")
    model = build_model(config.model)
    model.load_state_dict(weights)
    model.to(map_location).eval()
    extras_path = fsio.join(path, "extras.pt")
    extras = _load_tensors(fs, extras_path, map_location) if fsio.is_file(fs, extras_path) else {}
    return Bundle(model=model, config=config, meta=meta, extras=extras)


def update_extras(location: str, extras: dict[str, torch.Tensor]) -> str:
    """Add (or replace) named tensors in the bundle at ``location``, keeping everything else.

    The whole bundle is rewritten through :func:`write_bundle`, so a reader sees the old bundle or the new
    one, never a mix. Returns ``location``.
    """
    fs, path = fsio.resolve(location)
    try:
        config = json.loads(fsio.read_bytes(fs, fsio.join(path, "config.json")))
        meta = json.loads(fsio.read_bytes(fs, fsio.join(path, "meta.json")))
        weights = _load_tensors(fs, fsio.join(path, "weights.pt"), "cpu")
    except FileNotFoundError as exc:
        raise FacegenError(f"{location}: not a model bundle (missing {exc.filename or 'a file'})") from None
    extras_path = fsio.join(path, "extras.pt")
    merged = _load_tensors(fs, extras_path, "cpu") if fsio.is_file(fs, extras_path) else {}
    merged.update(extras)
    for key in ("format", "facegen_version", "created_at"):
        meta.pop(key, None)
    return write_bundle(location, config=config, weights=weights, meta=meta, extras=merged)
