"""Tests for the synthetic face dataset: determinism, on-disk layouts, truthful and visible labels, errors."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facegen.data import synth
from facegen.attributes import CELEBA_ATTRIBUTES, FAIRFACE_AGES, FAIRFACE_GENDERS, FAIRFACE_RACES
from facegen.data.factors import RENDERED_ATTRIBUTES
from facegen.data.synth import add_synth_arguments, run_synth, sample_face, write_synthetic
from facegen.data.synth_render import BEARD_FULL, BEARD_GOATEE, BEARD_NONE, render_face
from facegen.errors import FacegenError

CROP = (19, 39, 159, 179)  # CelebA's aligned 140x140 centre crop of a 178x218 image


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> str:
    return write_synthetic(str(tmp_path_factory.mktemp("synth") / "celeba"), 200, seed=3, workers=1,
                           progress=False)["out"]


@pytest.fixture(scope="module")
def fairface(tmp_path_factory) -> str:
    return write_synthetic(str(tmp_path_factory.mktemp("synth") / "fairface"), 60, seed=3, layout="fairface",
                           workers=1, progress=False)["out"]


def _digests(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _factors(root: str) -> dict[str, np.ndarray | list]:
    table = pq.read_table(os.path.join(root, "factors.parquet")).to_pydict()
    return {k: v if k in ("key", "split") else np.asarray(v) for k, v in table.items()}


def _attr_file(root: str) -> tuple[list[str], list[str], np.ndarray]:
    """(header lines, file names, values) of list_attr_celeba.txt, split on whitespace as readers do."""
    with open(os.path.join(root, "list_attr_celeba.txt")) as fh:
        lines = fh.read().splitlines()
    rows = [line.split() for line in lines[2:]]
    return lines[:2], [r[0] for r in rows], np.array([[int(v) for v in r[1:]] for r in rows])


def _crops64(root: str, keys: list[str]) -> np.ndarray:
    """The images as a training pipeline sees them: centre crop, resized to 64x64, float RGB."""
    return np.stack([np.asarray(Image.open(os.path.join(root, "img_align_celeba", k)).crop(CROP)
                                .resize((64, 64), Image.BILINEAR), dtype=np.float32) for k in keys])


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (0.5 for a useless score)."""
    label = label.astype(bool)
    ranks = np.argsort(np.argsort(score, kind="stable")) + 1
    pos, neg = label.sum(), (~label).sum()
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    one = write_synthetic(str(tmp_path / "one"), 48, seed=7, workers=1, progress=False)["out"]
    two = write_synthetic(str(tmp_path / "two"), 48, seed=7, workers=2, progress=False)["out"]
    other = write_synthetic(str(tmp_path / "other"), 48, seed=8, workers=1, progress=False)["out"]
    a, b, c = _digests(one), _digests(two), _digests(other)
    assert len(a) == 48 + 4 and a == b
    assert a.keys() == c.keys()
    differing = [k for k in a if a[k] != c[k]]
    assert "list_attr_celeba.txt" in differing and sum(k.endswith(".jpg") for k in differing) == 48


def test_celeba_layout(celeba):
    assert sorted(os.listdir(celeba)) == ["factors.parquet", "identity_CelebA.txt", "img_align_celeba",
                                          "list_attr_celeba.txt", "list_eval_partition.txt"]
    names = [f"{i:06d}.jpg" for i in range(1, 201)]
    assert sorted(os.listdir(os.path.join(celeba, "img_align_celeba"))) == names
    for name in names[::20]:
        with Image.open(os.path.join(celeba, "img_align_celeba", name)) as im:
            assert (im.format, im.size, im.mode) == ("JPEG", (178, 218), "RGB")

    header, files, values = _attr_file(celeba)
    assert header[0] == "200" and tuple(header[1].split()) == CELEBA_ATTRIBUTES
    assert files == names and values.shape == (200, 40) and set(np.unique(values)) == {-1, 1}

    with open(os.path.join(celeba, "list_eval_partition.txt")) as fh:
        parts = [line.split() for line in fh.read().splitlines()]
    assert [p[0] for p in parts] == names
    codes = [int(p[1]) for p in parts]
    assert codes == sorted(codes) and [codes.count(c) for c in (0, 1, 2)] == [160, 20, 20]

    with open(os.path.join(celeba, "identity_CelebA.txt")) as fh:
        ids = np.array([int(line.split()[1]) for line in fh.read().splitlines()])
    assert 30 <= len(set(ids)) <= 50  # about n/5
    for c in (1, 2):  # identities never cross splits
        assert not set(ids[np.array(codes) == c]) & set(ids[np.array(codes) != c])
    f = _factors(celeba)
    assert f["key"] == names and list(f["identity"]) == list(ids)
    for ident in set(ids):  # one identity keeps its base factors
        rows = ids == ident
        for col in ("race", "age", "skin_tone", "face_shape", "hair_color", "Male"):
            assert len(set(f[col][rows].tolist())) == 1, col


def test_fairface_layout(fairface):
    assert sorted(os.listdir(fairface)) == ["factors.parquet", "fairface_label_train.csv",
                                            "fairface_label_val.csv", "train", "val"]
    f = _factors(fairface)
    by_key = {k: i for i, k in enumerate(f["key"])}
    for split, count in (("train", 51), ("val", 9)):
        assert sorted(os.listdir(os.path.join(fairface, split)), key=lambda s: int(s[:-4])) == [
            f"{i}.jpg" for i in range(1, count + 1)]
        with open(os.path.join(fairface, f"fairface_label_{split}.csv"), newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == ["file", "age", "gender", "race", "service_test"] and len(rows) == count + 1
        for file, age, gender, race, service in rows[1:]:
            i = by_key[file]
            assert file.startswith(f"{split}/") and service in ("True", "False")
            assert FAIRFACE_AGES.index(age) == f["age"][i] and FAIRFACE_RACES.index(race) == f["race"][i]
            assert FAIRFACE_GENDERS.index(gender) == f["gender"][i] == 1 - f["Male"][i]
        with Image.open(os.path.join(fairface, rows[1][0])) as im:
            assert (im.format, im.size) == ("JPEG", (224, 224))


def test_labels_agree_with_factors_and_correlations_hold(celeba):
    _, files, values = _attr_file(celeba)
    f = _factors(celeba)
    for j, name in enumerate(CELEBA_ATTRIBUTES):
        assert np.array_equal((values[:, j] == 1).astype(int), f[name]), name
        if name not in RENDERED_ATTRIBUTES:
            assert (values[:, j] == -1).all(), name
        else:
            assert 0.05 < f[name].mean() < 0.9, name  # learnable base rates
    male, bald = f["Male"] == 1, f["Bald"] == 1
    for name in ("Goatee", "Mustache", "Sideburns", "5_o_Clock_Shadow", "Bald"):
        assert not f[name][~male].any(), name
    assert f["No_Beard"][~male].all()
    hair = np.stack([f[c] for c in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")], 1).sum(1)
    assert (hair[bald] == 0).all() and (hair[~bald] == 1).all()
    assert f["Wearing_Lipstick"][~male].mean() > 5 * max(f["Wearing_Lipstick"][male].mean(), 0.01)
    young = f["Young"] == 1
    assert f["Gray_Hair"][~young].mean() > f["Gray_Hair"][young].mean() + 0.1
    assert np.array_equal(f["No_Beard"] == 0, f["beard"] != BEARD_NONE)
    assert np.array_equal(f["Goatee"] == 1, f["beard"] == BEARD_GOATEE)


def test_files_are_the_renders_of_their_factors(celeba):
    """Each image is exactly render(sample_face(seed, index)): the labels describe what was drawn."""
    f = _factors(celeba)
    for i in (0, 57, 199):
        face, rng = sample_face(3, i, int(f["identity"][i]), "celeba")
        assert all(face.attrs[a] == f[a][i] for a in RENDERED_ATTRIBUTES)
        buf = io.BytesIO()
        render_face(face, rng, (178, 218), CROP[:2] + (140,)).save(buf, format="JPEG", quality=90)
        with open(os.path.join(celeba, "img_align_celeba", f["key"][i]), "rb") as fh:
            assert fh.read() == buf.getvalue()


# Where flipping each attribute must change the 64x64 crop (rows y0..y1, cols x0..x1 as fractions).
REGIONS = {
    "Smiling": (0.62, 0.85, 0.3, 0.7), "Mouth_Slightly_Open": (0.62, 0.85, 0.3, 0.7),
    "Wearing_Lipstick": (0.62, 0.85, 0.3, 0.7), "Mustache": (0.6, 0.8, 0.3, 0.7),
    "Eyeglasses": (0.42, 0.65, 0.15, 0.85), "Narrow_Eyes": (0.45, 0.62, 0.25, 0.75),
    "Rosy_Cheeks": (0.55, 0.75, 0.2, 0.8), "Bangs": (0.3, 0.55, 0.2, 0.8),
    "Wearing_Hat": (0.0, 0.45, 0.0, 1.0),
    "Sideburns": (0.35, 0.7, 0.15, 0.85), "5_o_Clock_Shadow": (0.55, 0.95, 0.2, 0.8),
    "Bald": (0.0, 0.5, 0.0, 1.0), "goatee": (0.7, 1.0, 0.3, 0.7), "beard": (0.5, 1.0, 0.15, 0.85),
    "old": (0.35, 0.85, 0.2, 0.8), "gray": (0.0, 0.6, 0.0, 1.0),
}


def _crop64(face) -> np.ndarray:
    im = render_face(face, np.random.default_rng(0), (178, 218), CROP[:2] + (140,))
    return np.asarray(im.crop(CROP).resize((64, 64), Image.BILINEAR), dtype=np.float32)


@pytest.mark.parametrize("race", [0, 1, 5])  # light, dark and middle skin
def test_each_rendered_attribute_is_visible_at_64px(race):
    """Flipping one factor on a plain frontal face changes its own region of the 64x64 crop, visibly."""
    index = next(i for i in range(500) if sample_face(0, i, i, "fairface")[0].race == race)
    face = sample_face(0, index, index, "fairface")[0]
    plain = {a: 0 for a in RENDERED_ATTRIBUTES} | {"Male": 1, "Black_Hair": 1, "No_Beard": 1, "Young": 1}
    face = dataclasses.replace(face, attrs=plain, age=3, beard=BEARD_NONE, yaw=0.0, face_scale=1.0,
                               lighting=0.0, hair_color=0)
    base = _crop64(face)
    flips = {name: {"attrs": plain | {name: 1}} for name in REGIONS if name[0].isupper()}
    flips |= {"goatee": {"beard": BEARD_GOATEE}, "beard": {"beard": BEARD_FULL}, "old": {"age": 7},
              "gray": {"hair_color": 3}}
    for name, change in flips.items():
        diff = np.abs(_crop64(dataclasses.replace(face, **change)) - base).sum(-1)
        y0, y1, x0, x1 = (round(v * 64) for v in REGIONS[name])
        inside = diff[y0:y1, x0:x1]
        assert inside.sum() >= 0.9 * diff.sum(), name  # the change is where the attribute is
        assert (inside > 60).sum() >= 10, name  # and a few pixels change clearly


def test_attribute_families_show_in_dataset_pixels(celeba):
    """Simple pixel statistics separate the labels of the written images (random labels give AUC ~0.5)."""
    f = _factors(celeba)
    x = _crops64(celeba, f["key"])

    def region(y0, y1, x0, x1):
        return x[:, round(y0 * 64):round(y1 * 64), round(x0 * 64):round(x1 * 64)]

    skin = np.median(region(0.56, 0.7, 0.3, 0.7).reshape(len(x), -1, 3), 1)[:, None, None, :]
    bridge = (np.abs(region(0.5, 0.58, 0.42, 0.58) - skin).sum(-1) > 60).mean((1, 2))
    assert _auc(bridge, f["Eyeglasses"]) > 0.9
    mouth = region(0.68, 0.84, 0.38, 0.62)
    assert _auc(((mouth[..., 0] - mouth[..., 1]) > 90).mean((1, 2)), f["Wearing_Lipstick"]) > 0.85
    gray = region(0.66, 0.86, 0.36, 0.64).mean(-1)
    assert _auc(gray.max((1, 2)) - gray.min((1, 2)), f["Mouth_Slightly_Open"]) > 0.75
    assert _auc(region(0.5, 0.75, 0.3, 0.7).mean((1, 2, 3)), f["Pale_Skin"]) > 0.85
    shown = (f["Wearing_Hat"] == 0) & ((f["Blond_Hair"] == 1) | (f["Black_Hair"] == 1))
    top = region(0.31, 0.38, 0.42, 0.58).mean((1, 2, 3))
    assert _auc(top[shown], f["Blond_Hair"][shown]) > 0.95


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "--n"), ({"n": -3}, "--n"), ({"n": 2.5}, "--n"), ({"seed": -1}, "--seed"),
    ({"layout": "lfw"}, "--layout"), ({"workers": 0}, "--workers"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    args = {"out": str(tmp_path / "out"), "n": 4, "progress": False} | kwargs
    with pytest.raises(FacegenError, match=message):
        write_synthetic(**args)
    assert os.listdir(tmp_path) == []


def test_existing_output_is_refused_unless_empty(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FacegenError, match="not a folder"):
        write_synthetic(str(tmp_path / "file"), 4, progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(FacegenError, match="not empty"):
        write_synthetic(str(tmp_path / "full"), 4, progress=False)
    assert os.listdir(tmp_path / "full") == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    write_synthetic(str(tmp_path / "empty"), 4, workers=1, progress=False)
    assert len(os.listdir(tmp_path / "empty" / "img_align_celeba")) == 4


def test_failed_run_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(synth, "render_face", boom)
    with pytest.raises(RuntimeError):
        write_synthetic(str(tmp_path / "out"), 4, workers=1, progress=False)
    assert os.listdir(tmp_path) == []


def test_cli_flags(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_synth_arguments(parser)
    defaults = parser.parse_args(["--out", "x"])
    assert (defaults.n, defaults.seed, defaults.layout, defaults.workers) == (2000, 0, "celeba", None)
    args = parser.parse_args(["--out", str(tmp_path / "ff"), "--n", "8", "--seed", "2",
                              "--layout", "fairface", "--workers", "1"])
    assert run_synth(args) == 0
    printed = capsys.readouterr()
    assert "wrote 8 synthetic fairface faces" in printed.out and "synth fairface" in printed.err  # the bar
    quiet = parser.parse_args(["--out", str(tmp_path / "quiet"), "--n", "4", "--workers", "1", "--no-progress"])
    assert run_synth(quiet) == 0
    printed = capsys.readouterr()
    assert "wrote 4 synthetic celeba faces" in printed.out and printed.err == ""
    assert sorted(os.listdir(tmp_path / "ff" / "train")) == [f"{i}.jpg" for i in range(1, 8)]
