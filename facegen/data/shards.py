"""Parquet shards: a :class:`SourceDataset` -> ``OUT/<split>/part-NNNNN.parquet`` + ``OUT/manifest.json``.

Row schema (:func:`shard_schema`, every dataset): ``key`` string, ``image`` an R x R RGB face (raw pixels or
PNG: the manifest's ``image_format``, see ``image_format.py``), ``split`` string, ``attrs`` list<int8> of 0/1 in
``attribute_names`` order (empty if none), ``identity`` int32, ``race``/``age``/``gender`` int8 and ``label``
int16 (-1 when absent). ``facegen.images.preprocess`` (crop, antialiased bicubic; serving reuses it) makes the
face; both formats are lossless, so a row holds exactly what training sees.

Shards go to temporary names then are renamed; an out-of-date manifest is deleted before any shard is
rewritten and the new one written last, atomically: readers see no manifest or a complete, matching one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import sys
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field, fields, replace

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm import tqdm

from facegen import io as fsio
from facegen.attributes import SPLITS
from facegen.data.balance import balance_splits
from facegen.data.image_format import DEFAULT_IMAGE_FORMAT, IMAGE_FORMATS, LEGACY_IMAGE_FORMAT, column_type
from facegen.data.records import FaceRecord, SourceDataset
from facegen.data.shard_images import Skipped, encode_image, encode_images
from facegen.errors import DatasetError, FacegenError

FORMAT_VERSION = 2  # 2: the `label` column
MANIFEST_NAME = "manifest.json"
SCHEMA = pa.schema([
    ("key", pa.string()), ("image", pa.binary()), ("split", pa.string()), ("attrs", pa.list_(pa.int8())),
    ("identity", pa.int32()), ("race", pa.int8()), ("age", pa.int8()), ("gender", pa.int8()),
    ("label", pa.int16()),
])  # of PNG shards; shard_schema gives each format's
_OUR_FILES = re.compile(r"part-\d{5,}\.parquet(\.tmp-[0-9a-f]+)?")  # all that stale-shard cleanup may delete
log = logging.getLogger(__name__)


def shard_schema(image_format: str, resolution: int) -> pa.Schema:
    """The Parquet schema of shards holding ``resolution`` faces in ``image_format`` (raw or png)."""
    return SCHEMA.set(SCHEMA.get_field_index("image"), pa.field("image", column_type(image_format, resolution)))


@dataclass(frozen=True)
class Shard:
    """One Parquet file: ``path`` relative to the manifest's folder, row count, SHA-256 and size in bytes."""

    path: str
    rows: int
    sha256: str
    size: int


@dataclass
class Manifest:
    """``OUT/manifest.json``: what was written, from what, and how.

    JSON layout: ``format_version``, ``dataset``, ``resolution``, ``attribute_names``, ``label_names``,
    ``splits: {split: {rows, shards: [{path, rows, sha256, size}]}}``, ``source`` (the src URI),
    ``params`` (resolution, balance, seed, rows_per_shard, crop, image_format), ``fingerprint`` (SHA-256 of the
    sorted records' keys and labels), ``skipped`` (``[{key, path, reason}]``: the images that could not be
    decoded and are in no shard) and ``image_format`` (``raw`` or ``png``); manifests written before the last
    two existed have none skipped and hold PNG. ``root`` (where it was read or written) and ``reused`` (True
    when :func:`write_shards` found it up to date and wrote nothing) are not stored.
    """

    root: str
    dataset: str
    resolution: int
    attribute_names: tuple[str, ...]
    label_names: dict[str, tuple[str, ...]]
    splits: dict[str, list[Shard]]
    source: str
    params: dict
    fingerprint: str
    skipped: list[dict] = field(default_factory=list)
    image_format: str = LEGACY_IMAGE_FORMAT
    format_version: int = FORMAT_VERSION
    reused: bool = field(default=False, compare=False)

    def rows(self, split: str) -> int:
        return sum(s.rows for s in self.splits.get(split, []))

    def shard_uris(self, split: str) -> list[str]:
        """Absolute paths / URIs of the split's shards, ready for ``ray.data.read_parquet``."""
        return [f"{self.root.rstrip('/')}/{s.path}" for s in self.splits.get(split, [])]

    def to_json(self) -> str:
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("root", "reused")}
        body["splits"] = {k: {"rows": self.rows(k), "shards": [vars(s) for s in shards]}
                          for k, shards in self.splits.items()}
        return json.dumps(body, indent=2) + "\n"


def read_manifest(uri: str, verify: bool = False) -> Manifest:
    """Load ``uri/manifest.json`` (``uri`` may also name the JSON file itself).

    ``verify=True`` also re-reads every shard and checks its SHA-256. Raises :class:`DatasetError` if the
    manifest is missing, unparsable, of another format version, or a shard is missing or altered.
    """
    fs, folder = fsio.resolve(uri[: -len(MANIFEST_NAME)] if uri.endswith(MANIFEST_NAME) else uri)
    path = fsio.join(folder, MANIFEST_NAME)
    where = fsio.to_uri(fs, path)
    try:
        data = json.loads(fsio.read_text(fs, path))
        if data.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{where}: format version {data.get('format_version')!r}, "
                               f"this facegen reads {FORMAT_VERSION}; run `facegen prepare` again")
        if (image_format := data.get("image_format", LEGACY_IMAGE_FORMAT)) not in IMAGE_FORMATS:
            raise DatasetError(f"{where}: unknown image_format {image_format!r}; run `facegen prepare` again")
        manifest = Manifest(
            root=fsio.to_uri(fs, folder), dataset=data["dataset"], resolution=int(data["resolution"]),
            attribute_names=tuple(data["attribute_names"]),
            label_names={k: tuple(v) for k, v in data["label_names"].items()},
            splits={k: [Shard(**s) for s in v["shards"]] for k, v in data["splits"].items()},
            source=data["source"], params={**data["params"], "image_format": image_format},
            fingerprint=data["fingerprint"], image_format=image_format,
            skipped=[{"key": s["key"], "path": s["path"], "reason": s["reason"]} for s in data.get("skipped", [])])
    except FileNotFoundError:
        raise DatasetError(f"{where}: no manifest (run `facegen prepare` to write shards there)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise DatasetError(f"{where}: corrupt manifest ({type(exc).__name__}: {exc})") from None
    for shard in (s for shards in manifest.splits.values() for s in shards):
        path = fsio.join(folder, shard.path)
        if verify and (not fsio.is_file(fs, path)
                       or hashlib.sha256(fsio.read_bytes(fs, path)).hexdigest() != shard.sha256):
            raise DatasetError(f"{fsio.to_uri(fs, path)}: missing or checksum differs from {where}")
    return manifest


def fingerprint(source: SourceDataset) -> str:
    """SHA-256 of the dataset name, label vocabularies and every record's key and labels, sorted by key."""
    rows = sorted((r.key, r.split, list(r.attrs), r.identity, r.race, r.age, r.gender, r.label)
                  for r in source.records)
    body = [source.name, list(source.attribute_names), source.label_names, rows]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_shard(fs: pafs.FileSystem, folder: str, rel: str, records: list[FaceRecord], faces: list[bytes],
                 schema: pa.Schema) -> Shard:
    """Write one Parquet file atomically at ``folder/rel`` and describe it."""
    columns = {"key": [r.key for r in records], "image": faces, "split": [r.split for r in records],
               "attrs": [list(r.attrs) for r in records]}
    columns.update({c: [getattr(r, c) for r in records] for c in ("identity", "race", "age", "gender", "label")})
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns, schema=schema), sink)
    data = sink.getvalue().to_pybytes()
    fsio.write_atomic(fs, fsio.join(folder, rel), data)
    return Shard(rel, len(records), hashlib.sha256(data).hexdigest(), len(data))


def _up_to_date(fs: pafs.FileSystem, folder: str, out: str, fp: str, params: dict) -> Manifest | None:
    """The existing manifest if it has this fingerprint and params and all its shards have their sizes."""
    try:
        manifest = read_manifest(out)
    except DatasetError:
        return None
    present = fsio.list_files(fs, folder, recursive=True)
    intact = all(present.get(s.path) == s.size for split in manifest.splits.values() for s in split)
    return manifest if intact and manifest.fingerprint == fp and manifest.params == params else None


def _recheck_skipped(source: SourceDataset, manifest: Manifest, resolution: int) -> list[Skipped] | None:
    """The manifest's skipped images that still cannot be decoded (``[]`` if none was skipped), or None if one
    now can: it was repaired, so the shards must be rewritten to include it."""
    paths = {r.key: r.image_path for r in source.records}
    still = []
    for entry in manifest.skipped:
        path = paths[entry["key"]]
        blob = None if source.images is None else source.images[path]
        result = encode_image(source.filesystem, source.crop, resolution, path, blob)
        if not isinstance(result, Skipped):
            return None
        still.append(result)
    return still


def write_shards(source: SourceDataset, out: str, resolution: int = 64, rows_per_shard: int = 2000,
                 balance: Sequence[str] = (), seed: int = 0, progress: bool = True, workers: int | None = None,
                 strict: bool = False, image_format: str = DEFAULT_IMAGE_FORMAT) -> Manifest:
    """Write ``source`` as Parquet shards + manifest under ``out`` (folder or URI); return the manifest.

    Splits come from the records, or from :func:`balance_splits` when ``balance`` names attributes. Records
    are sorted by key, then the train split is shuffled with ``seed``, so output depends only on the record
    set and the parameters. If ``out`` already holds an up-to-date manifest (same fingerprint and params,
    shards present with their sizes, no skipped image since repaired) nothing is written and the manifest
    comes back with ``reused=True``; otherwise everything is rewritten and shards no longer listed are
    deleted. ``workers`` processes decode images (default ``min(2, cpus)``). An undecodable image is left out
    with a ``warning:`` line on stderr and listed in ``manifest.skipped``; with ``strict`` it raises
    :class:`DatasetError` instead, as does a missing image, or a dataset none of whose images decode.
    ``image_format``: ``raw`` (training reads it without decoding) or ``png`` (see ``image_format.py``).
    """
    if resolution < 1 or rows_per_shard < 1:
        raise FacegenError(f"resolution ({resolution}) and rows per shard ({rows_per_shard}) must be >= 1")
    fs, folder = fsio.resolve(out)
    params = {"resolution": resolution, "balance": list(balance), "seed": seed,
              "rows_per_shard": rows_per_shard, "crop": list(source.crop), "image_format": image_format}
    schema = shard_schema(image_format, resolution)  # also rejects an unknown format before anything is read
    fp = fingerprint(source)
    current = _up_to_date(fs, folder, out, fp, params)
    still_bad = None if current is None else _recheck_skipped(source, current, resolution)
    if still_bad is not None:
        if strict and still_bad:
            raise DatasetError(still_bad[0].message)
        log.info("%s is up to date (same source and parameters); nothing written", out)
        current.reused = True
        return current

    records = sorted(source.records, key=lambda r: r.key)
    if balance:
        records = balance_splits(replace(source, records=records), balance, seed)
    by_split = {s: [r for r in records if r.split == s] for s in SPLITS}
    random.Random(seed).shuffle(by_split["train"])  # contiguous reads of a shard are already mixed
    order = [r for split in SPLITS for r in by_split[split]]

    manifest_path = fsio.join(folder, MANIFEST_NAME)
    if fsio.exists(fs, manifest_path):  # the old manifest would describe shards we are about to replace
        fs.delete_file(manifest_path)
    workers = workers or min(2, os.cpu_count() or 1)
    paths = [r.image_path for r in order]
    blobs = None if source.images is None else [source.images[p] for p in paths]
    shards: dict[str, list[Shard]] = {s: [] for s in SPLITS}
    pending: dict[str, list[tuple[FaceRecord, bytes]]] = {s: [] for s in SPLITS}  # rows and their stored faces
    skipped: list[dict] = []

    def flush(split: str) -> None:  # shards fill to rows_per_shard whatever was skipped before them
        rows, rel = pending[split], f"{split}/part-{len(shards[split]):05d}.parquet"
        shards[split].append(_write_shard(fs, folder, rel, [r for r, _ in rows], [face for _, face in rows], schema))
        rows.clear()

    bar = tqdm(total=len(paths), unit="img", desc=f"prepare {source.name}", disable=not progress)
    encoded = encode_images(source.filesystem, source.crop, resolution, paths, workers, blobs, image_format)
    with closing(encoded) as faces, bar:
        for record, face in zip(order, faces):
            bar.update()
            if isinstance(face, Skipped):
                if strict:
                    raise DatasetError(face.message)
                tqdm.write(f"warning: {face.message}; skipped", file=sys.stderr)
                skipped.append({"key": record.key, "path": face.path, "reason": face.reason})
                continue
            pending[record.split].append((record, face))
            if len(pending[record.split]) == rows_per_shard:
                flush(record.split)
        for split in (s for s in SPLITS if pending[s]):
            flush(split)
    if len(skipped) == len(order):
        raise DatasetError(f"none of the {len(order)} images could be decoded; first: "
                           f"{skipped[0]['path']}: {skipped[0]['reason']}")

    labels = {k: tuple(v) for k, v in source.label_names.items()}
    manifest = Manifest(fsio.to_uri(fs, folder), source.name, resolution, tuple(source.attribute_names),
                        labels, shards, source.root, params, fp, sorted(skipped, key=lambda e: e["key"]),
                        image_format)
    fsio.write_atomic(fs, manifest_path, manifest.to_json().encode())
    keep = {s.path for split in shards.values() for s in split}
    for rel in fsio.list_files(fs, folder, recursive=True):
        split, _, name = rel.partition("/")
        if split in SPLITS and _OUR_FILES.fullmatch(name) and rel not in keep:
            fs.delete_file(fsio.join(folder, rel))
    return manifest
