"""Fixtures for the data tests: tiny real-layout CelebA / FairFace folders and a loopback S3 server.

``make_celeba`` / ``make_fairface`` write a handful of real JPEGs plus the annotation files and return what
the readers should find, so tests can compare every label end to end. ``s3_bucket`` points the standard
AWS env vars at a moto S3 server on 127.0.0.1 (one per session) and returns a fresh bucket's name.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegen.attributes import CELEBA_ATTRIBUTES, FAIRFACE_AGES, FAIRFACE_GENDERS, FAIRFACE_RACES


def write_jpeg(path: Path, index: int, size: tuple[int, int]) -> None:
    """A distinct, smooth (so JPEG-friendly) ``size`` = (width, height) RGB image for each ``index``."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    pixels = np.stack([(x * 255 // w + 37 * index) % 256, (y * 255 // h) % 256,
                       np.full_like(x, 19 * index % 256)], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def write_celeba(root: Path, n: int = 10, layout: str = "txt", identities: bool = True,
                 splits: list[int] | None = None, attrs: list[list[int]] | None = None,
                 ident: list[int] | None = None) -> dict[str, dict]:
    """Write a CelebA folder; ``layout`` "txt" (authors') or "csv" (Kaggle, double image folder).

    ``splits``: partition codes 0/1/2 per image, ``attrs``: 40 values of 0/1 per image, ``ident``: identity
    per image (defaults are deterministic mixes). Returns ``{key: {"split", "attrs", "identity"}}``.
    """
    rng = np.random.default_rng(n)
    splits = splits if splits is not None else [(0, 0, 0, 1, 2)[i % 5] for i in range(n)]
    attrs = attrs if attrs is not None else rng.integers(0, 2, size=(n, 40)).tolist()
    ident = ident if ident is not None else [100 + i // 3 for i in range(n)]
    keys = [f"{i + 1:06d}.jpg" for i in range(n)]
    image_dir = root / ("img_align_celeba" if layout == "txt" else "img_align_celeba/img_align_celeba")
    for i, key in enumerate(keys):
        write_jpeg(image_dir / key, i, (178, 218))
    signs = [["1" if v else "-1" for v in row] for row in attrs]
    if layout == "txt":
        rows = [key + "".join(f" {s:>2}" for s in row) for key, row in zip(keys, signs)]
        header = " ".join(CELEBA_ATTRIBUTES) + " "  # the authors' file has a trailing space here
        (root / "list_attr_celeba.txt").write_text(f"{n}\n{header}\n" + "\n".join(rows) + "\n")
        (root / "list_eval_partition.txt").write_text("".join(f"{k} {s}\n" for k, s in zip(keys, splits)))
        if identities:
            (root / "identity_CelebA.txt").write_text("".join(f"{k} {d}\n" for k, d in zip(keys, ident)))
    else:
        rows = [",".join([key, *row]) for key, row in zip(keys, signs)]
        (root / "list_attr_celeba.csv").write_text(",".join(["image_id", *CELEBA_ATTRIBUTES]) + "\n"
                                                   + "\n".join(rows) + "\n")
        (root / "list_eval_partition.csv").write_text(
            "image_id,partition\n" + "".join(f"{k},{s}\n" for k, s in zip(keys, splits)))
        if identities:
            (root / "identity_CelebA.csv").write_text(
                "image_id,identity\n" + "".join(f"{k},{d}\n" for k, d in zip(keys, ident)))
    names = ("train", "val", "test")
    return {k: {"split": names[s], "attrs": tuple(a), "identity": d if identities else -1}
            for k, s, a, d in zip(keys, splits, attrs, ident)}


def write_fairface(root: Path, n_train: int = 6, n_val: int = 5) -> dict[str, dict]:
    """Write a FairFace folder (60x80 JPEGs); returns ``{file: {"split", "race", "age", "gender"}}``."""
    expected = {}
    for split, count in (("train", n_train), ("val", n_val)):
        lines = ["file,age,gender,race,service_test"]
        for i in range(count):
            key, j = f"{split}/{i + 1}.jpg", len(expected)
            race, age, gender = j % len(FAIRFACE_RACES), j % len(FAIRFACE_AGES), j % 2
            write_jpeg(root / key, j, (60, 80))
            lines.append(f"{key},{FAIRFACE_AGES[age]},{FAIRFACE_GENDERS[gender]},{FAIRFACE_RACES[race]},True")
            expected[key] = {"split": split, "race": race, "age": age, "gender": gender}
        (root / f"fairface_label_{split}.csv").write_text("\n".join(lines) + "\n")
    return expected


@pytest.fixture
def make_celeba():
    return write_celeba


@pytest.fixture
def make_fairface():
    return write_fairface


@pytest.fixture(scope="session")
def s3_endpoint():
    """``http://127.0.0.1:<port>`` of a moto S3 server living for the whole session."""
    pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A fresh bucket on the loopback server, with the standard AWS env vars pointing at it."""
    import boto3

    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"facegen-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return bucket
