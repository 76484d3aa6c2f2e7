"""Labels of augmented images, and the CelebA-layout output that makes them a trainable dataset.

Source labels come from a CelebA ``list_attr_celeba.txt`` (or ``.csv``), parsed by the CelebA reader's own
parser; a ``list_eval_partition`` file beside it, when there is one, gives each source's split. An image in
the ``--images`` folder is matched by its relative path, else by its file name (CelebA lists bare names).

A variant keeps its source's labels except the edited attributes: a direction edit with a positive strength
sets the attribute to 1, a negative one to 0 (strength 0 leaves it); a latent-slot edit sets 1 for a value
>= 0.5, else 0. With ``--relabel`` a variant instead has the source's labels with the manifest's ``relabels``
set (what the guide confirmed or saw drift, :mod:`facegen.augment.guided`). ``OUT/list_attr_celeba.txt`` (1/-1 as
in CelebA) and ``OUT/list_eval_partition.txt`` (every variant in train, an unedited source copy in its source's
split) sit beside ``OUT/img_align_celeba/``, so
``facegen prepare --dataset celeba --src OUT`` reads the result like any CelebA folder.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Mapping

from facegen import io as fsio
from facegen.attributes import CELEBA_ATTRIBUTES, CELEBA_PARTITIONS
from facegen.data.celeba import parse_attributes, parse_partition  # one parser for CelebA files
from facegen.errors import FacegenError
from facegen.augment.variants import LAYOUT_DIRS

PARTITION_CODES = {split: code for code, split in CELEBA_PARTITIONS.items()}


@dataclass(frozen=True)
class SourceLabels:
    """names: attribute names in CelebA order. attrs: {image name: 0/1 values}. splits: {image name: split},
    or None when no partition file sits beside the labels."""

    location: str
    names: tuple[str, ...]
    attrs: dict[str, tuple[int, ...]]
    splits: dict[str, str] | None

    def key_of(self, rel: str) -> str | None:
        """The labels' name for the image at ``rel`` (relative to the images folder), or None if unlabelled."""
        if rel in self.attrs:
            return rel
        name = posixpath.basename(rel)
        return name if name in self.attrs else None

    def celeba_vector(self, key: str) -> list[int]:
        """The image's labels as all 40 CelebA attributes (unlisted ones 0): what a CVAE's condition reads."""
        values = dict(zip(self.names, self.attrs[key]))
        return [values.get(name, 0) for name in CELEBA_ATTRIBUTES]


def read_source_labels(location: str) -> SourceLabels:
    """Parse ``location`` (a list_attr_celeba file) and the partition file beside it, if any."""
    fs, path = fsio.resolve(location)
    if not fsio.is_file(fs, path):
        raise FacegenError(f"--labels {location}: no such file")
    table = fsio.TextTable(fs, path)
    names, values = parse_attributes(table)
    splits = None
    for candidate in ("list_eval_partition.txt", "list_eval_partition.csv"):
        partition = fsio.join(posixpath.dirname(path), candidate)
        if fsio.is_file(fs, partition):
            pairs = parse_partition(fsio.TextTable(fs, partition))
            splits = {key: split for key, (split, _line) in pairs.items()}
            break
    return SourceLabels(location=location, names=names, attrs={k: v for k, (v, _line) in values.items()},
                        splits=splits)


def edited_labels(values: tuple[int, ...], names: tuple[str, ...], edits: Mapping[str, float],
                  fixed: frozenset[str]) -> tuple[int, ...]:
    """The labels of a variant made with ``edits`` from a source labelled ``values`` (see the module docstring)."""
    out = list(values)
    for name, strength in edits.items():
        index = names.index(name)
        if name in fixed:
            out[index] = int(strength >= 0.5)
        elif strength:
            out[index] = int(strength > 0)
    return tuple(out)


def relabelled(values: tuple[int, ...], names: tuple[str, ...], relabels: Mapping[str, int]) -> tuple[int, ...]:
    """The source's labels with the attributes in ``relabels`` (those the labels know) set to its values."""
    return tuple(int(relabels.get(name, v)) for name, v in zip(names, values))


def write_celeba_labels(out: str, rows: list[dict], labels: SourceLabels, source_keys: Mapping[str, str],
                        fixed: frozenset[str]) -> int:
    """Write ``OUT/list_attr_celeba.txt`` and ``OUT/list_eval_partition.txt`` for the manifest rows that have
    an output; ``source_keys`` maps a row's source to its name in ``labels``. Returns the number of images."""
    prefix = LAYOUT_DIRS["celeba"] + "/"
    attr_lines, partition_lines = [], []
    for row in rows:
        if row["output"] is None:
            continue
        key, source_key = row["output"][len(prefix):], source_keys[row["source"]]
        values = edited_labels(labels.attrs[source_key], labels.names, row["edits"], fixed)
        if row.get("relabels") is not None:  # --relabel: the guide's view of what changed, not the edit's sign
            values = relabelled(labels.attrs[source_key], labels.names, row["relabels"])
        split = "train"
        if row["variant"] == 0 and labels.splits is not None:  # the unedited copy keeps its own split
            split = labels.splits.get(source_key, "train")
        attr_lines.append(" ".join([key, *("1" if v else "-1" for v in values)]))
        partition_lines.append(f"{key} {PARTITION_CODES[split]}")
    fs, root = fsio.resolve(out)
    header = [str(len(attr_lines)), " ".join(labels.names)]
    fsio.write_atomic(fs, fsio.join(root, "list_attr_celeba.txt"), "\n".join(header + attr_lines).encode() + b"\n")
    fsio.write_atomic(fs, fsio.join(root, "list_eval_partition.txt"), "\n".join(partition_lines).encode() + b"\n")
    return len(attr_lines)
