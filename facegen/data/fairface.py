"""FairFace reader: the official label CSVs into a :class:`SourceDataset`.

Layout under ``src`` (a folder or URI)::

    fairface_label_train.csv   file,age,gender,race,service_test  /  train/1.jpg,50-59,Male,East Asian,True
    fairface_label_val.csv     same columns, files under val/
    train/1.jpg ...            images at the ``file`` path, relative to ``src``

Category strings must be exactly those of ``attributes.FAIRFACE_LABELS``; extra columns are ignored.

FairFace has no test split, so the official val set is halved deterministically: val images are ordered by
the SHA-1 of their key and the first ``ceil(n/2)`` stay ``"val"``, the rest become ``"test"``. The result
depends only on the set of val keys, not on file order, so every run and every machine agrees.
"""

from __future__ import annotations

import hashlib

from facegen import io as fsio
from facegen.attributes import FAIRFACE_LABELS
from facegen.io import TextTable
from facegen.data.records import FaceRecord, SourceDataset
from facegen.errors import DatasetError

LABEL_FILES = {"train": "fairface_label_train.csv", "val": "fairface_label_val.csv"}
REQUIRED_COLUMNS = ("file", "age", "gender", "race")
CROP = ("full",)  # FairFace images are already face crops (with margin); keep the whole square


def _parse(table: TextTable, split: str) -> list[tuple[FaceRecord, int]]:
    """Records of one label file with their line numbers; ``image_path`` is still relative to the root."""
    if not table.rows:
        raise table.error(1, f"empty file, expected a header with columns {','.join(REQUIRED_COLUMNS)}")
    header_line, header = table.rows[0]
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise table.error(header_line, f"missing column {column!r} (header is {','.join(header)})")
    index = {column: header.index(column) for column in REQUIRED_COLUMNS}
    out: list[tuple[FaceRecord, int]] = []
    for line, fields in table.rows[1:]:
        if len(fields) != len(header):
            raise table.error(line, f"expected {len(header)} fields, got {len(fields)}")
        labels = {}
        for head, names in FAIRFACE_LABELS.items():
            value = fields[index[head]]
            if value not in names:
                raise table.error(line, f"unknown {head} {value!r}")
            labels[head] = names.index(value)
        key = fields[index["file"]].strip("/")
        if not key:
            raise table.error(line, "empty file name")
        out.append((FaceRecord(key=key, image_path=key, split=split, **labels), line))
    return out


def _halve_val(records: list[FaceRecord]) -> dict[str, str]:
    """``{key: "val" or "test"}``: the half with the smaller SHA-1 of the key stays val."""
    ranked = sorted(records, key=lambda r: hashlib.sha1(r.key.encode()).hexdigest())
    keep = (len(ranked) + 1) // 2
    return {r.key: ("val" if i < keep else "test") for i, r in enumerate(ranked)}


def read_fairface(src: str) -> SourceDataset:
    """Parse and validate a FairFace folder or URI (see the module docstring).

    Returns train records then val/test records, in file order, with ``crop=("full",)``. Raises
    :class:`DatasetError` naming the file and line on any missing file, bad row or missing image.
    """
    fs, root = fsio.resolve(src)
    if not fsio.exists(fs, root):
        raise DatasetError(f"{src}: no such folder")
    parsed: list[tuple[FaceRecord, int, TextTable]] = []
    first_seen: dict[str, tuple[TextTable, int]] = {}
    for split, filename in LABEL_FILES.items():
        path = fsio.join(root, filename)
        if not fsio.is_file(fs, path):
            needed = " and ".join(LABEL_FILES.values())
            raise DatasetError(f"{fsio.to_uri(fs, path)}: missing (FairFace needs {needed})")
        table = TextTable(fs, path)
        for record, line in _parse(table, split):
            if record.key in first_seen:
                other, other_line = first_seen[record.key]
                raise table.error(line, f"duplicate file {record.key} (first in {other.name} line {other_line})")
            first_seen[record.key] = (table, line)
            parsed.append((record, line, table))

    if not parsed:
        raise DatasetError(f"{src}: the label files list no images")
    missing = fsio.missing_files(fs, root, [record.key for record, _, _ in parsed])
    for record, line, table in parsed:  # report the first missing image in file order
        if record.key in missing:
            raise table.error(line, f"image {fsio.to_uri(fs, fsio.join(root, record.key))} is missing")

    val_split = _halve_val([r for r, _, _ in parsed if r.split == "val"])
    records = [
        FaceRecord(
            key=r.key, image_path=fsio.join(root, r.key), split=val_split.get(r.key, r.split),
            race=r.race, age=r.age, gender=r.gender,
        )
        for r, _, _ in parsed
    ]
    return SourceDataset(name="fairface", root=fsio.to_uri(fs, root), filesystem=fs, records=records,
                         label_names=dict(FAIRFACE_LABELS), crop=CROP)
