"""CelebA reader: the authors' txt annotations or the Kaggle CSV mirror, into a :class:`SourceDataset`.

Layouts accepted under ``src`` (a folder or URI); annotation files may also sit in ``Anno/`` or ``Eval/`` as
in the authors' Google Drive, and ``.txt`` wins over ``.csv`` when both exist::

    list_attr_celeba.txt    "202599" / 40 names / "000001.jpg  -1  1 ..."  (variable whitespace)
    list_eval_partition.txt "000001.jpg 0"   (0/1/2 = train/val/test)
    identity_CelebA.txt     "000001.jpg 2880" (optional)
    list_attr_celeba.csv    "image_id,5_o_Clock_Shadow,..." / "000001.jpg,-1,1,..."
    list_eval_partition.csv "image_id,partition" / "000001.jpg,0"
    identity_CelebA.csv     "image_id,identity" / "000001.jpg,2880" (optional)
    img_align_celeba/img_align_celeba/*.jpg (Kaggle's double folder) or img_align_celeba/*.jpg

Attributes go from 1/-1 to 1/0, in ``attributes.CELEBA_ATTRIBUTES`` order (a file may hold a subset).
Any inconsistency raises :class:`DatasetError` naming the file and line.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow.fs as pafs

from facegen import io as fsio
from facegen.attributes import CELEBA_ATTRIBUTES, CELEBA_PARTITIONS
from facegen.io import TextTable
from facegen.data.records import NO_LABEL, FaceRecord, SourceDataset
from facegen.errors import DatasetError

ANNOTATION_DIRS = ("", "Anno", "Eval")
IMAGE_DIRS = ("img_align_celeba/img_align_celeba", "img_align_celeba", "Img/img_align_celeba")
_SIGNS = frozenset(("1", "-1"))
CROP = ("center", 140)  # the usual aligned-CelebA face square: 178x218 -> 140x140 around the centre


def _find(fs: pafs.FileSystem, root: str, stem: str) -> str | None:
    """Path of ``stem.txt`` / ``stem.csv`` in the first annotation folder holding one, else None."""
    candidates = [fsio.join(root, d, stem + ext) for d in ANNOTATION_DIRS for ext in (".txt", ".csv")]
    infos = fs.get_file_info(candidates)  # one batched call: cheap on object stores
    return next((i.path for i in infos if i.type == pafs.FileType.File), None)


def parse_attributes(table: TextTable) -> tuple[tuple[str, ...], dict[str, tuple[tuple[int, ...], int]]]:
    """Attribute names (canonical order) and ``{image: (0/1 values in that order, line)}``."""
    rows = table.rows
    if table.is_csv:
        if not rows:
            raise table.error(1, "empty file, expected a header 'image_id,<attributes>'")
        header_line, header = rows[0][0], rows[0][1][1:]
        body = rows[1:]
    else:
        if len(rows) < 2:
            raise table.error(len(rows) + 1, "expected an image count line then a header of attribute names")
        (count_line, count_fields), (header_line, header), body = rows[0], rows[1], rows[2:]
        if len(count_fields) != 1 or not count_fields[0].isdigit():
            raise table.error(count_line, f"expected the image count, got {' '.join(count_fields)!r}")
        if int(count_fields[0]) != len(body):
            raise table.error(count_line, f"count says {count_fields[0]} images but {len(body)} rows follow")
    for name in header:
        if name not in CELEBA_ATTRIBUTES:
            raise table.error(header_line, f"unknown attribute {name!r}")
    if len(set(header)) != len(header) or not header:
        raise table.error(header_line, "attribute names must be non-empty and unique")
    names = tuple(sorted(header, key=CELEBA_ATTRIBUTES.index))
    order = [header.index(n) for n in names]
    values: dict[str, tuple[tuple[int, ...], int]] = {}
    for line, fields in body:
        if len(fields) != len(header) + 1:
            raise table.error(line, f"expected {len(header) + 1} fields, got {len(fields)}")
        key, raw = fields[0], fields[1:]
        if not _SIGNS.issuperset(raw):  # fast path: one set test per row, the loop only to name the culprit
            name, value = next((n, v) for n, v in zip(header, raw) if v not in _SIGNS)
            raise table.error(line, f"{name} is {value!r}, expected 1 or -1")
        if key in values:
            raise table.error(line, f"duplicate image {key} (first at line {values[key][1]})")
        values[key] = (tuple(int(raw[i] == "1") for i in order), line)
    return names, values


def parse_pairs(table: TextTable, what: str, expected: str, convert: Callable[[str], int | str]
                ) -> dict[str, tuple]:
    """``{image: (converted value, line)}`` of a two-column file; ``convert`` raises ValueError on bad input."""
    out: dict[str, tuple] = {}
    for line, key, raw in table.pairs(what):
        try:
            value = convert(raw)
        except (ValueError, KeyError):
            raise table.error(line, f"{what} is {raw!r}, expected {expected}") from None
        if key in out:
            raise table.error(line, f"duplicate image {key} (first at line {out[key][1]})")
        out[key] = (value, line)
    return out


def _check_same_images(a: TextTable, a_keys: dict, b: TextTable, b_keys: dict) -> None:
    """Raise on the first image (by line) listed in one file but not the other."""
    for table, keys, other, other_keys in ((a, a_keys, b, b_keys), (b, b_keys, a, a_keys)):
        extra = [(keys[k][1], k) for k in keys.keys() - other_keys.keys()]
        if extra:
            line, key = min(extra)
            raise table.error(line, f"{key} is not in {other.name}")


def _split_of_partition_code(code: str) -> str:
    return CELEBA_PARTITIONS[int(code)]


def parse_partition(table: TextTable) -> dict[str, tuple[str, int]]:
    """``{image: ("train" | "val" | "test", line)}`` of a ``list_eval_partition`` file (codes 0 / 1 / 2)."""
    return parse_pairs(table, "partition code", "0, 1 or 2", _split_of_partition_code)


def _identity(raw: str) -> int:
    if int(raw) < 0:
        raise ValueError(raw)
    return int(raw)


def read_celeba(src: str) -> SourceDataset:
    """Parse and validate a CelebA folder or URI (see the module docstring for accepted layouts).

    Returns records in annotation-file order with ``image_path`` on the source filesystem and
    ``crop=("center", 140)``. Raises :class:`DatasetError` on any missing or inconsistent file.
    """
    fs, root = fsio.resolve(src)
    if not fsio.exists(fs, root):
        raise DatasetError(f"{src}: no such folder")
    stems = ("list_attr_celeba", "list_eval_partition", "identity_CelebA")
    found = {stem: _find(fs, root, stem) for stem in stems}
    for stem in stems[:2]:  # the identity file is optional
        if found[stem] is None:
            raise DatasetError(f"{src}: no {stem}.txt or {stem}.csv (also looked in Anno/ and Eval/)")
    attr_table = TextTable(fs, found["list_attr_celeba"])
    names, attrs = parse_attributes(attr_table)
    if not attrs:
        raise DatasetError(f"{attr_table.name}: lists no images")
    part_table = TextTable(fs, found["list_eval_partition"])
    splits = parse_partition(part_table)
    _check_same_images(attr_table, attrs, part_table, splits)
    identities: dict[str, tuple] = {}
    if found["identity_CelebA"] is not None:
        id_table = TextTable(fs, found["identity_CelebA"])
        identities = parse_pairs(id_table, "identity", "an integer >= 0", _identity)
        _check_same_images(attr_table, attrs, id_table, identities)

    dirs = [fsio.join(root, d) for d in IMAGE_DIRS]
    image_dir = next((i.path for i in fs.get_file_info(dirs) if i.type == pafs.FileType.Directory), None)
    if image_dir is None:
        raise DatasetError(f"{src}: no image folder (looked for {', '.join(d + '/' for d in IMAGE_DIRS)})")
    missing = fsio.missing_files(fs, image_dir, list(attrs))
    if missing:
        line, key = min((attrs[k][1], k) for k in missing)
        raise attr_table.error(line, f"image {fsio.to_uri(fs, fsio.join(image_dir, key))} is missing")

    records = [
        FaceRecord(
            key=key,
            image_path=fsio.join(image_dir, key),
            split=splits[key][0],
            attrs=values,
            identity=identities[key][0] if identities else NO_LABEL,
        )
        for key, (values, _line) in attrs.items()
    ]
    return SourceDataset(name="celeba", root=fsio.to_uri(fs, root), filesystem=fs, records=records,
                         attribute_names=names, crop=CROP)
