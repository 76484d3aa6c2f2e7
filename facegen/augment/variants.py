"""Attribute augmentation: K edited variants of every image, made with a latent model's edits.

What variant k (1..K) of an image applies, for ``--edits`` ``{attr: s}``:

* a **direction** edit moves the code by ``s * k / K`` standard deviations (a ladder up to the full edit),
  times ``1 + J * u`` when a jitter J > 0 is asked, with u uniform in [-1, 1] drawn once per
  ``(seed, k, attr)``. Every image's k-th variant gets the same edit, so a manifest row says exactly what was
  applied and the output does not depend on how Ray Data batches the images;
* a **latent-slot** edit (a CVAE's attribute entry, an InfoGAN code, see :func:`facegen.latent.edit.latent_slots`)
  is a value, not a step: every variant sets it as given;
* with ``--flip`` instead of ``--edits``, variant k of a conditional model's source flips one attribute slot,
  chosen per source (:mod:`facegen.augment.flips`); the manifest's ``edits`` holds the one flipped.

Variant 0 is the unedited source at the model's resolution, written only when asked (``with_sources``).
Images are read, cropped and resized like the training shards (:func:`facegen.images.preprocess`), so
an edit sees what the model was trained on. Outputs go to ``OUT/<layout dir>/<relative path stem>__v<k>.png``.

Manifest (``OUT/manifest.jsonl``, one JSON object a line, sorted by source then variant): ``source`` (path or
URI of the source image), ``output`` (the written file relative to OUT, null on an error row), ``variant``,
``edits`` ({attr: strength} applied, {} for variant 0), ``method``, ``error`` (null, or one line such as
``PATH: cannot decode image (...)``) and ``relabels`` (``{attribute: 0/1}``: with ``--relabel`` the labels the
guide's readings set, :mod:`facegen.augment.guided`; with ``--flip`` every condition entry that changed; else
null). This module does no Ray: :class:`EditVariants` is a plain callable that ``facegen.augment.job`` runs as
a Ray Data actor.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import torch

from facegen import io as fsio
from facegen.augment.flips import FLIP, flip_codes, flipped_attribute, stable_seed
from facegen.augment.guided import GuidedEditor
from facegen.bundle import load_bundle
from facegen.errors import FacegenError
from facegen.images import DECODE_ERRORS, decode_face, encode_png, from_uint8
from facegen.latent.conditions import ConditionTable
from facegen.latent.directions import Directions
from facegen.latent.edit import MAX_SLOT_PUSH, edit_codes, pushed, residual_images
from facegen.latent.guided import GUIDED, guide_from_bundle
from facegen.latent.scoring import batched

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LAYOUT_DIRS = {"images": "images", "celeba": "img_align_celeba"}
MANIFEST_NAME = "manifest.jsonl"
ROW_SCHEMA = pa.schema([("source", pa.string()), ("output", pa.string()), ("variant", pa.int32()),
                        ("edits", pa.string()), ("method", pa.string()), ("error", pa.string()),
                        ("relabels", pa.string())])


def parse_edits(text: str) -> dict[str, float]:
    """``"Smiling:+1,Eyeglasses:-0.5"`` -> ``{"Smiling": 1.0, "Eyeglasses": -0.5}``; FacegenError if malformed."""
    edits: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, value = part.rpartition(":")
        try:
            strength = float(value)
        except ValueError:
            strength = None
        if not sep or not name.strip() or strength is None:
            raise FacegenError(f"--edits: expected ATTR:STRENGTH (e.g. Smiling:+1), got {part!r}")
        if name.strip() in edits:
            raise FacegenError(f"--edits: {name.strip()!r} is given twice")
        edits[name.strip()] = strength
    return edits


@dataclass(frozen=True)
class AugmentSpec:
    """What to make of each image; see the module docstring for what variant k applies.

    edits: {attr: strength}. fixed: the names among them that are latent slots (set, never scaled).
    crop: a :func:`facegen.images.crop_box` crop. layout: a key of :data:`LAYOUT_DIRS`.
    """

    edits: dict[str, float]
    variants: int
    method: str = "mean_diff"
    keep: tuple[str, ...] = ()
    jitter: float = 0.0
    seed: int = 0
    crop: tuple = ("full",)
    layout: str = "images"
    with_sources: bool = False
    fixed: frozenset[str] = field(default_factory=frozenset)
    relabel: bool = False
    """Label variants by what the guide sees change (:mod:`facegen.augment.guided`), not by the edit's sign."""
    residual: bool = False
    """Write source + (decoded edit - reconstruction): the edit's change on the source's own pixels."""
    flip: tuple[str, ...] = ()
    """Attribute slots that variants flip, one each, instead of ``edits`` (:mod:`facegen.augment.flips`)."""
    slot_push: float = 0.0
    """With ``flip``: the flipped entry is set this far past 0/1 (1 + push, or -push; the label stays 0/1)."""

    def __post_init__(self) -> None:
        if self.variants < 1:
            raise FacegenError(f"--variants must be >= 1, got {self.variants}")
        if not 0 <= self.jitter < 1:
            raise FacegenError(f"--jitter must be in [0, 1), got {self.jitter}")
        if self.seed < 0:
            raise FacegenError(f"--seed must be >= 0, got {self.seed}")
        if not 0 <= self.slot_push <= MAX_SLOT_PUSH or (self.slot_push and not self.flip):
            raise FacegenError(f"--slot-push goes with --flip and must be in [0, {MAX_SLOT_PUSH:g}], got "
                               f"{self.slot_push:g}")
        if self.layout not in LAYOUT_DIRS:
            raise FacegenError(f"--layout: unknown layout {self.layout!r} (known: {', '.join(LAYOUT_DIRS)})")

    def edits_for(self, k: int) -> dict[str, float]:
        """The edits of variant k (1..K), strengths rounded to 4 decimals so the manifest states them exactly."""
        out = {}
        for name, strength in self.edits.items():
            if name in self.fixed:
                out[name] = strength
                continue
            factor = k / self.variants
            if self.jitter:
                u = np.random.default_rng([self.seed, k, stable_seed(name)]).uniform(-1.0, 1.0)
                factor *= 1.0 + self.jitter * u
            out[name] = round(strength * factor, 4)
        return out

    def output_name(self, rel: str, k: int) -> str:
        """Where variant k of the source at ``rel`` (relative to the images folder) goes, relative to OUT."""
        stem = posixpath.splitext(rel)[0]
        return posixpath.join(LAYOUT_DIRS[self.layout], f"{stem}__v{k}.png" if k else f"{stem}.png")


def list_images(images: str) -> list[str]:
    """Paths relative to ``images`` (folder or URI) of its .jpg/.jpeg/.png files, recursively, sorted."""
    fs, root = fsio.resolve(images)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise FacegenError(f"--images {images}: no such folder")
    found = sorted(rel for rel in fsio.list_files(fs, root, recursive=True)
                   if rel.lower().endswith(IMAGE_SUFFIXES) and ".tmp-" not in rel)
    if not found:
        raise FacegenError(f"--images {images}: holds no .jpg/.jpeg/.png images")
    return found


def error_row(source: str, method: str, message: str) -> dict:
    return {"source": source, "output": None, "variant": None, "edits": None, "method": method, "error": message}


def read_sources(batch: pa.Table, root: str) -> pa.Table:
    """Ray Data UDF: add ``data`` (the file's bytes, null if unreadable) and ``error`` (null or one line)."""
    fs, base = fsio.resolve(root)
    blobs, errors = [], []
    for rel, source in zip(batch.column("rel").to_pylist(), batch.column("source").to_pylist()):
        try:
            blobs.append(fsio.read_bytes(fs, fsio.join(base, rel)))
            errors.append(None)
        except OSError as exc:  # missing since listing, no permission, I/O error
            blobs.append(None)
            errors.append(f"{source}: cannot read ({exc.strerror or exc})")
    batch = batch.append_column("data", pa.array(blobs, pa.binary()))
    return batch.append_column("error", pa.array(errors, pa.string()))


class EditVariants:
    """Ray Data actor: loads the bundle once, then per batch decodes, edits, writes PNGs and returns manifest rows.

    Input columns: ``rel``, ``source``, ``data``, ``error``, ``edit`` (False: copy only, a val/test image) and,
    for a model whose encoder needs a condition, ``attrs`` (40 CelebA 0/1 labels). Output: :data:`ROW_SCHEMA`.
    A row that cannot be read or decoded becomes an error row; the rest of the batch goes on.
    """

    def __init__(self, bundle: str, out: str, spec: AugmentSpec, directions: Directions | None,
                 threads: int = 1, guide: str | None = None, scale: torch.Tensor | None = None,
                 conditions: ConditionTable | None = None):

        torch.set_num_threads(threads)  # the actor pool is the parallelism; one BLAS thread per actor
        self.model = load_bundle(bundle).model
        self.resolution = self.model.config.resolution
        self.fs, self.out = fsio.resolve(out)
        self.spec, self.directions = spec, directions
        # guided edits and --relabel read a guide classifier; scale (D,) is the unit of a guided step
        self.editor = GuidedEditor(guide_from_bundle(guide), scale) if guide else None
        self.conditions = conditions  # --flip: the condition combinations training faces have

    def _write(self, rel_out: str, image: torch.Tensor) -> None:
        fsio.write_atomic(self.fs, fsio.join(self.out, rel_out), encode_png(image))

    def __call__(self, batch: pa.Table) -> pa.Table:
        spec, rows = self.spec, []
        good, pixels = [], []
        for i, row in enumerate(batch.select(["source", "data", "error"]).to_pylist()):
            if row["error"] is not None:
                rows.append(error_row(row["source"], spec.method, row["error"]))
                continue
            try:
                pixels.append(np.asarray(decode_face(row["data"], spec.crop, self.resolution)))
                good.append(i)
            except DECODE_ERRORS as exc:
                rows.append(error_row(row["source"], spec.method, f"{row['source']}: cannot decode image ({exc})"))
        if not good:
            return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
        rels = [batch.column("rel")[i].as_py() for i in good]
        sources = [batch.column("source")[i].as_py() for i in good]
        images = from_uint8(np.stack(pixels))
        cond = None
        if "attrs" in batch.column_names:
            attrs = torch.tensor([batch.column("attrs")[i].as_py() for i in good], dtype=torch.float32)
            cond = self.model.condition_of({"image": images, "attrs": attrs})
        if spec.with_sources:
            for rel, source, image in zip(rels, sources, images):
                self._write(spec.output_name(rel, 0), image)
                rows.append({"source": source, "output": spec.output_name(rel, 0), "variant": 0, "edits": "{}",
                             "method": spec.method, "error": None})
        todo = [j for j, i in enumerate(good) if batch.column("edit")[i].as_py()]
        if not todo:
            return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
        codes = batched(self.model.encode, images[todo], len(todo), None if cond is None else cond[todo])
        recon = batched(self.model.decode, codes, len(todo))  # what the edits start from
        # --residual: the source's own pixels plus what the edit changed, so a variant is no blurrier than it
        start = images[todo] if spec.residual else recon
        before = self.editor.readings(start) if spec.relabel else None
        for k in range(1, spec.variants + 1):  # encode once, then one latent step and one decode per variant
            edits = [spec.edits_for(k)] * len(todo)
            relabels = None
            if spec.method == FLIP:  # one attribute per source, labelled by the whole new condition
                chosen = [flipped_attribute(spec.flip, spec.seed, sources[j], k) for j in todo]
                edited, relabels = flip_codes(self.model, codes, chosen, self.conditions, spec.slot_push)
                # the manifest states the value set, its label the 0/1 it stands for
                edits = [{name: pushed(changes[name], spec.slot_push)} for name, changes in zip(chosen, relabels)]
            elif spec.method == GUIDED:
                edited = self.editor.edit(self.model, codes, edits[0])
            else:
                edited = edit_codes(self.model, codes, edits[0], keep=spec.keep, method=spec.method,
                                    directions=self.directions)
            decoded = batched(self.model.decode, edited, len(todo))
            if spec.residual:
                decoded = residual_images(start, recon, decoded)
            if spec.relabel:
                targets = {n: int(s >= 0.5) if n in spec.fixed else int(s > 0) for n, s in edits[0].items()
                           if s or n in spec.fixed}
                relabels = self.editor.relabels(before, self.editor.readings(decoded), targets)
            for n, (j, image) in enumerate(zip(todo, decoded)):
                self._write(spec.output_name(rels[j], k), image)
                rows.append({"source": sources[j], "output": spec.output_name(rels[j], k), "variant": k,
                             "edits": json.dumps(edits[n]), "method": spec.method, "error": None,
                             "relabels": None if relabels is None else json.dumps(relabels[n])})
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def manifest_rows(rows: list[dict]) -> list[dict]:
    """Rows from the pipeline (edits as JSON text) -> manifest rows (edits as dicts), sorted."""
    out = [{**row, "edits": None if row["edits"] is None else json.loads(row["edits"]),
            "relabels": None if row.get("relabels") is None else json.loads(row["relabels"])} for row in rows]
    return sorted(out, key=lambda r: (r["source"], -1 if r["variant"] is None else r["variant"]))


def write_manifest(out: str, rows: list[dict]) -> str:
    """Write ``OUT/manifest.jsonl`` atomically; returns its location."""
    fs, root = fsio.resolve(out)
    path = fsio.join(root, MANIFEST_NAME)
    fsio.write_atomic(fs, path, "".join(json.dumps(row) + "\n" for row in rows).encode())
    return fsio.to_uri(fs, path)
