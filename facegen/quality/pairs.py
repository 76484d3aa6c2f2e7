"""The renderer's counterfactual test sets (``facegen synth --counterfactuals``, written by
:mod:`facegen.data.counterfactual`): one ``<attribute>.parquet`` per attribute, each row a test face, the same
face with that attribute flipped to ``target_value``, and both faces' labels. Found, listed and read here;
:mod:`facegen.quality.edits` scores edits against them."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from facegen import io as fsio
from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.errors import FacegenError
from facegen.images import decode_png, from_uint8

_COLUMNS = ("attribute", "target_value", "original", "counterfactual", "attrs_original", "attrs_counterfactual")


@dataclass
class PairSet:
    """One ``<attribute>.parquet``: originals, counterfactuals (N, 3, H, W), target values (N,) int64 and both
    faces' 40 CelebA labels (N, 40) float, in ``CELEBA_ATTRIBUTES`` order."""

    attribute: str
    originals: torch.Tensor
    counterfactuals: torch.Tensor
    targets: torch.Tensor
    attrs_original: torch.Tensor
    attrs_counterfactual: torch.Tensor
    resolution: int

    def held(self, names: Sequence[str]) -> torch.Tensor:
        """(N, len(names)) bool: the labels the true edit leaves alone (the counterfactual's equal the
        original's), the cells :func:`score_edits` counts as drift."""
        columns = [CELEBA_ATTRIBUTES.index(n) for n in names]
        return self.attrs_original[:, columns].round() == self.attrs_counterfactual[:, columns].round()


def find_counterfactuals(shards: str, resolution: int) -> str | None:
    """A folder of counterfactual sets near the shards, if any: ``<shards>/counterfactuals``,
    ``<shards>/../counterfactuals`` or ``<shards>/../cf<resolution>`` (the README's ``out/cf64``)."""
    fs, root = fsio.resolve(shards)
    parent = posixpath.dirname(root)
    for folder in (fsio.join(root, "counterfactuals"), fsio.join(parent, "counterfactuals"),
                   fsio.join(parent, f"cf{resolution}")):
        if any(p.endswith(".parquet") for p in fsio.list_files(fs, folder)):
            return fsio.to_uri(fs, folder)
    return None


def counterfactual_attributes(folder: str) -> list[str]:
    """The attributes with a ``<attribute>.parquet`` in ``folder``, sorted."""
    fs, root = fsio.resolve(folder)
    names = [p[:-len(".parquet")] for p in fsio.list_files(fs, root) if p.endswith(".parquet") and "/" not in p]
    return sorted(n for n in names if n in CELEBA_ATTRIBUTES)


def _images(blobs: list[bytes]) -> torch.Tensor:
    return from_uint8(np.stack([decode_png(b) for b in blobs]))


def read_pairs(folder: str, attribute: str, limit: int) -> PairSet:
    """The first ``limit`` pairs of ``folder/<attribute>.parquet``; FacegenError when it is not such a file."""
    fs, root = fsio.resolve(folder)
    path = fsio.join(root, f"{attribute}.parquet")
    try:
        table = pq.read_table(pa.BufferReader(fsio.read_bytes(fs, path)))
    except (FileNotFoundError, pa.ArrowException, OSError) as exc:
        raise FacegenError(f"{fsio.to_uri(fs, path)}: not a readable counterfactual set ({exc})") from None
    missing = [c for c in _COLUMNS if c not in table.column_names]
    if missing:
        raise FacegenError(f"{fsio.to_uri(fs, path)}: not a counterfactual set (no column {missing[0]!r})")
    rows = table.slice(0, limit).to_pydict()
    meta = table.schema.metadata or {}
    resolution = int(meta.get(b"resolution", b"0")) if rows["original"] else 0
    if rows["original"]:
        originals, counterfactuals = _images(rows["original"]), _images(rows["counterfactual"])
        resolution = resolution or originals.shape[-1]
    else:
        originals = counterfactuals = torch.zeros(0, 3, 1, 1)
    return PairSet(attribute, originals, counterfactuals, torch.tensor(rows["target_value"], dtype=torch.int64),
                   torch.tensor(rows["attrs_original"], dtype=torch.float32).reshape(-1, len(CELEBA_ATTRIBUTES)),
                   torch.tensor(rows["attrs_counterfactual"], dtype=torch.float32).reshape(-1, len(CELEBA_ATTRIBUTES)),
                   resolution)
