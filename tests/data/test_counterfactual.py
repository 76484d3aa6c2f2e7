"""Tests for the synthetic counterfactuals: one attribute changes, only where it is drawn, labels stay true,
the original is the dataset's own image, and the writer / CLI produce the promised rows and errors."""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facegen import cli
from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.data.celeba import read_celeba
from facegen.data.counterfactual import (NotRenderable, SynthRef, counterfactual, edit_face, training_png,
                                         write_counterfactuals)
from facegen.data.fairface import read_fairface
from facegen.data.factors import RENDERED_ATTRIBUTES
from facegen.data.shards import write_shards
from facegen.data.synth import CANVAS, IMAGE_DIR, JPEG_QUALITY, PALE_TONE, RACES, sample_face, write_synthetic
from facegen.data.synth_render import BEARD_FULL, BEARD_GOATEE, BEARD_NONE, _Geom
from facegen.errors import FacegenError

HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
FACIAL_HAIR = ("Mustache", "Sideburns", "5_o_Clock_Shadow")
# Labels each counterfactual may change besides its own (the module docstring's table).
ALSO = {"Sideburns": {"Bald", *HAIR}, "Bangs": {"Bald", *HAIR}, "Goatee": {"No_Beard"},
        "No_Beard": {"Goatee", "5_o_Clock_Shadow"}, "Bald": {"Bangs", "Sideburns", *HAIR},
        **{h: {"Bald", *HAIR} for h in HAIR},
        "Male": {"Bald", "Goatee", "No_Beard", *FACIAL_HAIR, *HAIR}}
EDITABLE = {"attrs", "age", "beard", "hair_color", "skin_tone"}  # factors an edit may touch


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> str:
    return write_synthetic(str(tmp_path_factory.mktemp("cf") / "celeba"), 60, seed=4, workers=1,
                           progress=False)["out"]


def _broken_rules(face) -> list[str]:
    """The rules of synth.sample_face that ``face`` breaks, written out independently of edit_face."""
    a, man = face.attrs, face.attrs["Male"] and face.age >= 3
    lo, hi = PALE_TONE if a["Pale_Skin"] else RACES[face.race][0]
    rules = {
        "hair labels": [a[h] for h in HAIR] == [int(not a["Bald"] and face.hair_color == k) for k in range(4)],
        "beard labels": (a["Goatee"], a["No_Beard"]) == (face.beard == BEARD_GOATEE, face.beard == BEARD_NONE),
        "Young": a["Young"] == (face.age <= 3),
        "bald men": man or not a["Bald"],
        "facial hair on men": man or (face.beard == BEARD_NONE and not any(a[h] for h in FACIAL_HAIR)),
        "hair for bangs and sideburns": not (a["Bald"] and (a["Bangs"] or a["Sideburns"])),
        "no stubble under a beard": not (a["5_o_Clock_Shadow"] and face.beard == BEARD_FULL),
        "lipstick from 10": face.age >= 2 or not a["Wearing_Lipstick"],
        "pale only if White": face.race == 0 or not a["Pale_Skin"],
        "tone in its band": lo - 1e-9 <= face.skin_tone <= hi + 1e-9,
    }
    return [name for name, ok in rules.items() if not ok]


@pytest.mark.parametrize("layout", ["celeba", "fairface"])
def test_edits_change_one_attribute_and_stay_drawable(layout):
    """Every edit sets its attribute, changes only the documented other labels and factors, keeps the
    sampler's rules; refusals happen only where the sampler never draws the result."""
    refused = 0
    for i in range(300):
        face = sample_face(1, i, i // 3, layout)[0]
        assert _broken_rules(face) == [], i  # the oracle agrees with the sampler
        man = face.attrs["Male"] and face.age >= 3
        for attribute in RENDERED_ATTRIBUTES:
            for value in (0, 1):
                try:
                    edited = edit_face(face, attribute, value)
                except NotRenderable:
                    refused += 1
                    assert value == (attribute != "No_Beard") and (
                        not man and attribute in ("Bald", "Goatee", "No_Beard", *FACIAL_HAIR)
                        or attribute == "5_o_Clock_Shadow" and face.beard == BEARD_FULL
                        or attribute == "Wearing_Lipstick" and face.age < 2
                        or attribute == "Pale_Skin" and face.race != 0), (i, attribute, value)
                    continue
                assert edited.attrs[attribute] == value and _broken_rules(edited) == [], (i, attribute, value)
                changed = {k for k in RENDERED_ATTRIBUTES if edited.attrs[k] != face.attrs[k]}
                assert changed <= {attribute} | ALSO.get(attribute, set()), (i, attribute, value, changed)
                assert (edited == face) == (face.attrs[attribute] == value)
                for field in dataclasses.fields(face):
                    if field.name not in EDITABLE:
                        assert getattr(edited, field.name) == getattr(face, field.name), (attribute, field.name)
    assert refused > 0


def _box(face, layout: str, x0: float, x1: float, y0: float, y1: float, margin: int = 2):
    """Face-unit rectangle -> (top, bottom, left, right) canvas pixels, widened by ``margin``."""
    left, top, side = CANVAS[layout][1]
    return (top + y0 * side - margin, top + y1 * side + margin, left + x0 * side - margin,
            left + x1 * side + margin)


def _regions(face, layout: str) -> dict[str, tuple]:
    """Where each attribute is drawn, from the renderer's own geometry (synth_render._Geom)."""
    g = _Geom(face)
    rim_x, rim_y = 0.42 * g.w + 0.3 * g.w * g.eye, 0.2 * g.w * g.eye  # outer edge of the glasses' rims
    x0, x1 = min(g.cx - g.wl, g.cx + g.dx - rim_x), max(g.cx + g.wr, g.cx + g.dx + rim_x)  # temples reach the ears
    eyes = _box(face, layout, x0 - 0.01, x1 + 0.01, g.ey - rim_y - 0.01, g.ey + rim_y + 0.01)
    mx = g.cx + g.dx
    mouth = _box(face, layout, mx - 0.62 * g.w, mx + 0.62 * g.w, g.my - 0.25 * g.h, g.my + 0.22 * g.h)
    top = _box(face, layout, 0.0, 1.0, -0.1, g.hairline + 0.01)  # crown and brim end at the hairline
    return {"Eyeglasses": eyes, "Narrow_Eyes": eyes, "Smiling": mouth, "Mouth_Slightly_Open": mouth,
            "Wearing_Lipstick": mouth, "Mustache": mouth, "Wearing_Hat": top}


@pytest.mark.parametrize("attribute", ["Eyeglasses", "Narrow_Eyes", "Smiling", "Mouth_Slightly_Open",
                                       "Wearing_Lipstick", "Mustache", "Wearing_Hat"])
@pytest.mark.parametrize("layout", ["celeba", "fairface"])
def test_changed_pixels_lie_where_the_attribute_is_drawn(attribute, layout):
    n, tried = 80, 0
    for index in range(n):
        ref = SynthRef.at(2, layout, n, index)
        original = counterfactual(ref)
        try:
            flipped = counterfactual(ref, attribute, 1 - original.face.attrs[attribute])
        except NotRenderable:
            continue
        diff = np.asarray(flipped.image, np.int16) - np.asarray(original.image, np.int16)
        ys, xs = np.nonzero(np.abs(diff).sum(-1))
        assert len(ys) >= 20, (index, "the flip must show")
        top, bottom, left, right = _regions(original.face, layout)[attribute]
        assert top <= ys.min() and ys.max() <= bottom and left <= xs.min() and xs.max() <= right, (
            index, (ys.min(), ys.max(), xs.min(), xs.max()), (top, bottom, left, right))
        tried += 1
        if tried == 8:
            break
    assert tried >= 3


def test_own_value_gives_the_same_bytes_and_other_values_change_the_image():
    for index in (0, 7, 33):
        ref = SynthRef.at(5, "celeba", 40, index)
        original = counterfactual(ref)
        assert counterfactual(ref).image.tobytes() == original.image.tobytes()  # deterministic
        for attribute in RENDERED_ATTRIBUTES:
            same = counterfactual(ref, attribute, original.face.attrs[attribute])
            assert same.image.tobytes() == original.image.tobytes() and same.changed == (), attribute
            assert same.attrs == original.attrs and list(same.attrs) == list(CELEBA_ATTRIBUTES)
            try:
                other = counterfactual(ref, attribute, 1 - original.face.attrs[attribute])
            except NotRenderable:
                continue
            assert other.image.tobytes() != original.image.tobytes(), attribute
            assert other.attrs[attribute] == 1 - original.attrs[attribute] and attribute in other.changed
            again = counterfactual(ref, attribute, 1 - original.face.attrs[attribute])
            assert again.image.tobytes() == other.image.tobytes() and again.attrs == other.attrs


def test_other_seeds_give_other_faces():
    a, b = (counterfactual(SynthRef.at(seed, "celeba", 40, 3), "Eyeglasses", 1) for seed in (5, 6))
    assert a.image.tobytes() != b.image.tobytes()


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def test_the_original_is_the_dataset_file(celeba, tmp_path):
    fairface = write_synthetic(str(tmp_path / "ff"), 30, seed=4, layout="fairface", workers=1, progress=False)
    for root, layout, n in ((celeba, "celeba", 60), (fairface["out"], "fairface", 30)):
        rows = pq.read_table(os.path.join(root, "factors.parquet")).to_pylist()
        for index in (0, n // 2, n - 1):
            ref = SynthRef.from_row(rows[index], seed=4, n=n)
            assert ref == SynthRef.at(4, layout, n, index)
            with open(os.path.join(root, IMAGE_DIR[layout], ref.key), "rb") as fh:
                written = fh.read()
            assert _jpeg(counterfactual(ref).image) == written
            assert _jpeg(counterfactual(ref, "Smiling", rows[index]["Smiling"]).image) == written
            assert counterfactual(ref).attrs == {a: rows[index][a] for a in CELEBA_ATTRIBUTES}
        with pytest.raises(FacegenError, match="--seed"):
            SynthRef.from_row(rows[1], seed=5, n=n)


def test_writer_rows_match_prepare_and_labels(celeba, tmp_path):
    out = tmp_path / "cf"
    names = ["Eyeglasses", "Goatee", "Young", "Blond_Hair"]
    summary = write_counterfactuals(celeba, str(out), names, n=4, seed=4, resolution=32)
    assert sorted(os.listdir(out)) == sorted(f"{a}.parquet" for a in names) and summary["test_faces"] == 6
    shards = write_shards(read_celeba(celeba), str(tmp_path / "shards"), resolution=32, workers=1,
                          progress=False, image_format="png")  # the sets store PNG: compare the very bytes
    shard_png = {r["key"]: r["image"] for uri in shards.shard_uris("test") for r in pq.read_table(uri).to_pylist()}
    for name in names:
        table = pq.read_table(out / f"{name}.parquet")
        rows, j = table.to_pylist(), CELEBA_ATTRIBUTES.index(name)
        assert len(rows) == summary["pairs"][name] <= 4
        assert summary["pairs"][name] + summary["skipped"][name] >= 4  # stops at n pairs or the last face
        assert table.schema.metadata[b"resolution"] == b"32"
        for row in rows:
            assert row["attribute"] == name and row["original"] == shard_png[row["key"]]  # prepare's pixels
            assert row["target_value"] == 1 - row["attrs_original"][j] == row["attrs_counterfactual"][j]
            pairs = zip(CELEBA_ATTRIBUTES, row["attrs_original"], row["attrs_counterfactual"])
            changed = [a for a, x, y in pairs if x != y]
            assert set(changed) == set(row["changed"]) and name in changed
            with Image.open(io.BytesIO(row["counterfactual"])) as im:
                assert (im.format, im.size) == ("PNG", (32, 32))
            assert row["counterfactual"] != row["original"]
    assert summary["pairs"]["Eyeglasses"] == 4 and summary["skipped"]["Eyeglasses"] == 0
    again = write_counterfactuals(os.path.join(celeba, "factors.parquet"), str(tmp_path / "again"), names, n=4,
                                  seed=4, resolution=32)
    assert again["pairs"] == summary["pairs"]
    for name in names:
        assert (out / f"{name}.parquet").read_bytes() == (tmp_path / "again" / f"{name}.parquet").read_bytes()


def test_writer_uses_prepares_fairface_test_half(tmp_path):
    root = write_synthetic(str(tmp_path / "ff"), 40, seed=2, layout="fairface", workers=1, progress=False)["out"]
    summary = write_counterfactuals(root, str(tmp_path / "cf"), ["Smiling"], seed=2, resolution=16)
    test = sorted(r.key for r in read_fairface(root).records if r.split == "test")
    rows = pq.read_table(tmp_path / "cf" / "Smiling.parquet").to_pylist()
    assert sorted(r["key"] for r in rows) == test and summary["pairs"]["Smiling"] == len(test) > 0
    ref = SynthRef.from_row({"key": rows[0]["key"]}, seed=2, n=40)
    png = training_png(counterfactual(ref, "Smiling", rows[0]["target_value"]).image, ("full",), 16)
    assert png == rows[0]["counterfactual"]


def test_cli(celeba, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["synth", "--counterfactuals", celeba, "--seed", "4", "--out", str(out), "--n", "2",
                     "--attributes", "Smiling, Wearing_Hat", "--resolution", "16"]) == 0
    assert "wrote 4 counterfactual pairs (2 attributes, 6 test faces" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["Smiling.parquet", "Wearing_Hat.parquet"]
    bad = {"not a dataset": (["--counterfactuals", str(tmp_path / "nope")], "factors.parquet: missing"),
           "unknown attribute": (["--counterfactuals", celeba, "--attributes", "Smiling,Beard"], "'Beard'"),
           "wrong seed": (["--counterfactuals", celeba, "--seed", "9"], "--seed"),
           "no attributes": (["--counterfactuals", celeba, "--attributes", " , "], "unknown attribute ''"),
           "stray flag": (["--resolution", "32"], "go with --counterfactuals"),
           "bad size": (["--counterfactuals", celeba, "--resolution", "0"], "resolution must be")}
    for case, (args, message) in bad.items():
        assert cli.main(["synth", "--out", str(tmp_path / "bad"), *args]) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (case, err)
    assert not (tmp_path / "bad").exists()
