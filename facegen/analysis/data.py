"""What latent analysis reads: keyed examples of two splits, their binary labels, ground-truth factors, groups.

* **Examples**: the first ``n`` rows of a split, as :func:`facegen.data.pipeline.read_examples` gives them,
  plus each row's ``key`` (needed to join the synthetic ground truth).
* **Labels** (N, A) 0/1, the attributes directions are fitted for and edits are judged against: the dataset's
  own attributes (CelebA layout); else, on synthetic data, the rendered attributes from ``factors.parquet``
  (so synthetic FairFace gets them too); else FairFace gender as ``Male``. Constant columns are dropped.
* **Factors** (N, K): the synthetic generator's factors of variation (``factors.parquet`` beside the rendered
  dataset, found through the shard manifest's ``source``), joined on the image key; for a labelled dataset
  without them, its class labels (a digit) stand in.
* **Groups** for breaking results down: FairFace race / gender / age from the shards, else from the
  synthetic factors, else the ``Male`` attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from facegen import io as fsio
from facegen.attributes import CELEBA_ATTRIBUTES, FAIRFACE_LABELS
from facegen.data.factors import CONTINUOUS_FACTORS, FACTOR_ATTRIBUTES, FACTORS_NAME, INDEX_FACTORS
from facegen.data.pipeline import READ_COLUMNS, TrainCollate, decode_batch, shard_paths
from facegen.data.shards import Manifest
from facegen.errors import FacegenError

GROUP_HEADS = ("race", "gender", "age")


@dataclass
class Split:
    """One split's examples. batch: read_examples' dict (image (N, 3, R, R) ...); keys: N row keys;
    labels: (N, A) float 0/1 or None; factors: (N, K) float, NaN where the key has no ground truth;
    groups: head -> (N,) int64 class index, -1 unknown."""

    name: str
    batch: dict[str, torch.Tensor]
    keys: list[str]
    labels: torch.Tensor | None = None
    factors: np.ndarray | None = None
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class AnalysisData:
    """The two splits plus what their columns mean and where they came from (for the report)."""

    manifest: Manifest
    train: Split
    test: Split
    label_names: list[str]
    label_source: str
    factor_names: list[str]
    factor_discrete: list[bool]
    factor_source: str
    group_names: dict[str, tuple[str, ...]]
    group_source: str


def read_keyed_examples(manifest: Manifest, split: str, n: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The first ``n`` rows of ``split`` as a model batch (like ``read_examples``) and their keys."""
    filesystem, paths = shard_paths(manifest, split)
    tables, rows = [], 0
    for path in paths:
        if rows >= n:
            break
        tables.append(pq.read_table(path, filesystem=filesystem, columns=list(READ_COLUMNS)))
        rows += tables[-1].num_rows
    if not tables:
        raise FacegenError(f"{manifest.root}: split {split!r} has no rows")
    table = pa.concat_tables(tables).slice(0, n)
    decoded = decode_batch(table, manifest.resolution, manifest.image_format)
    keys = [k for k, ok in zip(table.column("key").to_pylist(), decoded["ok"]) if ok]  # collate drops bad rows
    batch = TrainCollate(seed=0, epoch=0, hflip=False)(decoded)
    batch.pop("corrupt_rows")
    return batch, keys


def find_factors(manifest: Manifest, explicit: str | None) -> str | None:
    """Path of the factors table: ``explicit`` (a file, or a folder holding factors.parquet), else the one
    beside the dataset the shards were prepared from, else None. A given path that does not exist is an error."""
    candidates = [explicit] if explicit else [manifest.source]
    for location in candidates:
        try:
            fs, path = fsio.resolve(location)
            for option in (path, fsio.join(path, FACTORS_NAME)):
                if option.endswith(".parquet") and fsio.is_file(fs, option):
                    return fsio.to_uri(fs, option)
        except (FacegenError, OSError):
            pass
    if explicit:
        raise FacegenError(f"--factors {explicit}: no {FACTORS_NAME} there")
    return None


def _factor_table(location: str) -> dict[str, np.ndarray]:
    fs, path = fsio.resolve(location)
    try:
        table = pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowInvalid) as exc:
        raise FacegenError(f"{location}: cannot read factors ({exc})") from None
    if "key" not in table.column_names:
        raise FacegenError(f"{location}: factors table has no 'key' column")
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _join(table: dict[str, np.ndarray], keys: list[str], columns: list[str]) -> np.ndarray:
    """(N, len(columns)) float of the table's rows for ``keys``, NaN rows for unknown keys."""
    where = {k: i for i, k in enumerate(table["key"].tolist())}
    rows = np.array([where.get(k, -1) for k in keys])
    out = np.full((len(keys), len(columns)), np.nan)
    found = rows >= 0
    for j, name in enumerate(columns):
        out[found, j] = table[name][rows[found]].astype(np.float64)
    return out


def _varying(values: np.ndarray) -> np.ndarray:
    """Columns of (N, K) that take more than one value among their known (non-NaN) rows."""
    return np.array([len(np.unique(c[~np.isnan(c)])) > 1 for c in values.T], dtype=bool)


def load_analysis_data(manifest: Manifest, n: int, n_test: int, factors: str | None = None) -> AnalysisData:
    """Read ``n`` training and ``n_test`` held-out (test, else val) examples with labels, factors, groups."""
    held_out = "test" if manifest.rows("test") else "val"
    if not manifest.rows("train") or not manifest.rows(held_out):
        raise FacegenError(f"{manifest.root}: analysis needs train and test (or val) rows")
    splits = [Split(name, *read_keyed_examples(manifest, name, size))
              for name, size in (("train", n), (held_out, n_test))]
    table_path = find_factors(manifest, factors)
    table = _factor_table(table_path) if table_path else None
    if table is not None and not np.isin(splits[0].keys, table["key"]).any():
        raise FacegenError(f"{table_path}: no key of the shards' images ({splits[0].keys[0]}, ...) is in it")

    # Labels: the dataset's attributes, else the synthetic ground truth's, else FairFace gender.
    names, source = list(manifest.attribute_names), "dataset attributes"
    if names and splits[0].batch["attrs"].shape[1] == len(names):
        columns = [s.batch["attrs"].numpy().astype(np.float64) for s in splits]
    elif table is not None:
        names = [a for a in CELEBA_ATTRIBUTES if a in table]
        columns, source = [_join(table, s.keys, names) for s in splits], f"synthetic ground truth ({table_path})"
    elif (splits[0].batch["gender"] >= 0).any():
        names, source = ["Male"], "FairFace gender (Male = gender 0)"
        columns = [(s.batch["gender"] == 0).double().numpy()[:, None] for s in splits]
    else:
        names, columns, source = [], [], "the data has no binary attributes"
    if names:
        keep = _varying(columns[0]) & ~np.isnan(columns[0]).any(0) & ~np.isnan(columns[1]).any(0)
        names = [name for name, k in zip(names, keep) if k]
        for split, values in zip(splits, columns):
            split.labels = torch.from_numpy(values[:, keep]).float() if names else None
        if not names:
            source = "no attribute varies in the data"

    # Factors: the generator's, else a dataset's class labels.
    factor_names, discrete, factor_source = [], [], "none"
    if table is not None:
        factor_names = [c for c in (*CONTINUOUS_FACTORS, *INDEX_FACTORS, *FACTOR_ATTRIBUTES) if c in table]
        for split in splits:
            split.factors = _join(table, split.keys, factor_names)
        varying = _varying(splits[0].factors)
        factor_names = [f for f, v in zip(factor_names, varying) if v]
        for split in splits:
            split.factors = split.factors[:, varying]
        discrete = [f not in CONTINUOUS_FACTORS for f in factor_names]
        factor_source = f"synthetic ground truth ({table_path})"
    else:
        heads = [h for h in ("label", *GROUP_HEADS) if (splits[0].batch[h] >= 0).any()]
        if heads:
            factor_names, discrete, factor_source = heads, [True] * len(heads), "dataset class labels"
            for split in splits:
                split.factors = np.stack([split.batch[h].double().numpy() for h in heads], 1)
                split.factors[split.factors < 0] = np.nan

    # Groups: FairFace heads from the shards, else from the synthetic factors, else the Male attribute.
    group_names, group_source = {}, "none"
    heads = [h for h in GROUP_HEADS if (splits[1].batch[h] >= 0).any()]
    if heads:
        group_source = "the dataset's FairFace labels"
        for split in splits:
            split.groups = {h: split.batch[h].numpy().astype(np.int64) for h in heads}
    elif table is not None and all(h in table for h in GROUP_HEADS):
        group_source = "the synthetic ground truth's race / gender / age (the shards carry attributes only)"
        for split in splits:
            values = np.nan_to_num(_join(table, split.keys, list(GROUP_HEADS)), nan=-1).astype(np.int64)
            split.groups = dict(zip(GROUP_HEADS, values.T))
        heads = list(GROUP_HEADS)
    elif "Male" in names:
        group_source = "the Male attribute (the data has no FairFace groups)"
        group_names = {"Male": ("not Male", "Male")}
        for split in splits:
            split.groups = {"Male": split.labels[:, names.index("Male")].long().numpy()}
    group_names.update({h: FAIRFACE_LABELS[h] for h in heads})
    return AnalysisData(manifest, splits[0], splits[1], names, source, factor_names, discrete, factor_source,
                        group_names, group_source)
