"""The record every dataset reader yields, whatever the on-disk layout.

Readers (CelebA, FairFace, digits) turn a dataset folder or URI into a :class:`SourceDataset`: a list of
:class:`FaceRecord` plus the filesystem to open images from. The shard writer consumes only this, so a new
layout is one new reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.fs as pafs

NO_LABEL = -1  # stands for "this dataset has no such label" in integer label fields


@dataclass(frozen=True)
class FaceRecord:
    """One labelled image of a source dataset.

    key: stable unique id within the dataset, e.g. ``"000001.jpg"`` (CelebA) or ``"train/1.jpg"`` (FairFace).
    image_path: path of the image inside ``SourceDataset.filesystem`` (not a URI).
    split: ``"train"``, ``"val"`` or ``"test"``.
    attrs: binary attributes in ``SourceDataset.attribute_names`` order, each 0 or 1 (empty if none).
    identity: person id (CelebA's identity file), ``NO_LABEL`` if unknown.
    race, age, gender: FairFace class indices into ``attributes.FAIRFACE_LABELS``, ``NO_LABEL`` if absent.
    label: class index of a single-label dataset (the digit of a digits image), ``NO_LABEL`` if absent.
    """

    key: str
    image_path: str
    split: str
    attrs: tuple[int, ...] = ()
    identity: int = NO_LABEL
    race: int = NO_LABEL
    age: int = NO_LABEL
    gender: int = NO_LABEL
    label: int = NO_LABEL


@dataclass(frozen=True)
class SourceDataset:
    """A parsed dataset: its records, the filesystem holding the images, and its label vocabulary.

    name: ``"celeba"``, ``"fairface"``, ``"digits"`` or ``"mnist"``.
    crop: how to cut the training square out of an image before resizing, see ``facegen.images.crop_box``:
        ``("center", side)`` for a centred square of ``side`` pixels, or ``("full",)`` for the largest centred
        square.
    images: encoded images (PNG/JPEG bytes) by ``image_path``, for datasets that come as arrays rather than
        files (digits, MNIST); None = open each ``image_path`` in ``filesystem``.
    """

    name: str
    root: str
    filesystem: pafs.FileSystem
    records: list[FaceRecord]
    attribute_names: tuple[str, ...] = ()
    label_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    crop: tuple = ("full",)
    images: dict[str, bytes] | None = None
