"""The demo's choice of what to edit: the attribute the analysis measured to flip most, on a face lacking it."""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from PIL import Image

from serve.demo import best_edit_attribute, held_out_photos


def _cell(flip_rate):
    return {"judges": {"classifier": {"flip_rate": flip_rate}}}


def test_best_edit_attribute_is_the_most_often_flipped(tmp_path):
    path = tmp_path / "analysis.json"
    path.write_text(json.dumps({"sections": {"evaluation": {"attributes": {
        "Smiling": {"mean_diff": _cell(0.07), "boundary": _cell(0.9)},
        "Bangs": {"mean_diff": _cell(0.95)},
        "Male": {"mean_diff": _cell(None)},
        "Eyeglasses": {"boundary": _cell(0.99)}}}}}))
    assert best_edit_attribute(str(path)) == "Bangs"
    assert best_edit_attribute(str(path), method="boundary") == "Eyeglasses"
    assert best_edit_attribute(str(tmp_path / "missing.json")) == "Smiling"
    (tmp_path / "bad.json").write_text("{")
    assert best_edit_attribute(str(tmp_path / "bad.json"), fallback="Male") == "Male"


def test_held_out_photos_lack_the_attribute(tiny_shards):
    from facegen.data.pipeline import read_examples
    from facegen.data.shards import read_manifest
    from facegen.latent.grids import to_pil

    manifest = read_manifest(tiny_shards)
    examples = read_examples(manifest, "test", 64)
    names = list(manifest.attribute_names)
    # Attributes the first test face has: a photo chosen without looking at the attribute would be that face.
    present = [n for i, n in enumerate(names) if examples["attrs"][0, i] > 0.5
               and (examples["attrs"][:, i] < 0.5).any()]
    assert present
    faces = [np.asarray(to_pil(image)) for image in examples["image"]]
    for attribute in present:
        photos = held_out_photos(manifest, attribute, k=3)
        assert 1 <= len(photos) <= 3
        for photo in photos:
            pixels = np.asarray(Image.open(io.BytesIO(photo), formats=["PNG"]))
            matches = [i for i, face in enumerate(faces) if np.array_equal(face, pixels)]
            assert matches, "the photo is not a test-split face"
            assert examples["attrs"][matches[0], names.index(attribute)] < 0.5


def test_best_edit_attribute_among_those_with_counterfactuals(tmp_path):
    path = tmp_path / "analysis.json"
    path.write_text(json.dumps({"sections": {"evaluation": {"attributes": {
        "Smiling": {"mean_diff": _cell(0.5)}, "Attractive": {"mean_diff": _cell(0.99)}}}}}))
    assert best_edit_attribute(str(path)) == "Attractive"
    assert best_edit_attribute(str(path), among=["Smiling", "Eyeglasses"]) == "Smiling"


def test_counterfactual_photos_are_the_renderers_pairs_in_the_edits_direction(synth_celeba, tmp_path):
    import pyarrow.parquet as pq

    from facegen.data.counterfactual import write_counterfactuals
    from serve.demo import before_after, counterfactual_photos

    folder = str(tmp_path / "cf")
    write_counterfactuals(synth_celeba, folder, ["Eyeglasses"], n=12, seed=0, resolution=32)
    rows = pq.read_table(f"{folder}/Eyeglasses.parquet").to_pylist()
    for strength, wanted in ((2.0, 1), (-2.0, 0)):
        pairs = counterfactual_photos(folder, "Eyeglasses", strength, k=3)
        expected = [(r["original"], r["counterfactual"]) for r in rows if r["target_value"] == wanted][:3]
        # Same pixels as the files (the PNGs are re-encoded from the decoded pairs).
        assert [tuple(_pixels(b) for b in pair) for pair in pairs] == \
            [tuple(_pixels(b) for b in pair) for pair in expected]
        assert pairs, "the set has faces in both directions"
    assert counterfactual_photos(folder, "Smiling", 2.0) == []  # no pairs for it
    assert counterfactual_photos(None, "Eyeglasses", 2.0) == []

    original, truth = (Image.open(io.BytesIO(b), formats=["PNG"]) for b in pairs[0])
    path = before_after([("original", original), ("counterfactual", truth)], str(tmp_path / "strip.png"), scale=2)
    strip = np.asarray(Image.open(path, formats=["PNG"]))
    assert strip.shape[1] == 2 * 64 + 8 and strip.shape[0] > 64  # two enlarged frames, a gap, a caption row
    assert np.array_equal(strip[:64:2, :64:2], np.asarray(original))
    assert np.array_equal(strip[:64:2, 72::2], np.asarray(truth))


def _pixels(png: bytes) -> bytes:
    return np.asarray(Image.open(io.BytesIO(png), formats=["PNG"])).tobytes()


def _row(attribute, method="slot", flip=0.95, drift=0.01, fidelity=25.0, recon=26.0, unedited=24.0):
    return {"attribute": attribute, "method": method, "flip_rate": flip, "drift": drift, "fidelity_psnr": fidelity,
            "recon_psnr": recon, "unedited_psnr": unedited}


def test_visible_reliable_edit_is_the_largest_true_change_among_edits_that_meet_the_target(tmp_path):
    from serve.demo import visible_reliable_edit

    path = tmp_path / "quality.json"

    def write(rows):
        path.write_text(json.dumps({"bundles": [{"editing": {"rows": rows}}]}))
        return str(path)

    rows = [_row("Rosy_Cheeks", unedited=33.0), _row("Eyeglasses", unedited=22.0),
            _row("Blond_Hair", flip=0.85, unedited=15.0),  # the largest change, but it misses the flip target
            _row("Male", drift=0.2, unedited=14.0),  # moves the other attributes too
            _row("Wearing_Hat", method="counterfactual", unedited=10.0),  # the renderer's own edit
            _row("Bald", flip=0.93, fidelity=20.0, unedited=12.0)]  # too far from the counterfactual
    assert visible_reliable_edit(write(rows)) == "Eyeglasses"
    assert visible_reliable_edit(str(path), among=["Rosy_Cheeks", "Blond_Hair"]) == "Rosy_Cheeks"
    # None meets the target: the most often flipped
    assert visible_reliable_edit(str(path), among=["Blond_Hair", "Bald", "Male"]) == "Male"
    assert visible_reliable_edit(write([_row("Bald", flip=0.5), _row("Male", flip=0.7, drift=0.3)])) == "Male"
    assert visible_reliable_edit(str(path), method="mean_diff") is None
    assert visible_reliable_edit(str(tmp_path / "missing.json")) is None
    path.write_text("{")
    assert visible_reliable_edit(str(path)) is None


def test_the_demo_benchmarks_its_editors_condition_edits_pushed(synth_celeba, tiny_shards, tmp_path):
    from facegen.data.counterfactual import write_counterfactuals
    from facegen.demo import benchmark
    from tests.serve.conftest import write_tiny_bundle

    out = tmp_path / "demo"
    write_counterfactuals(synth_celeba, str(out / "counterfactuals"), ["Smiling", "Eyeglasses"], n=6, seed=0,
                          resolution=32)
    classifier = write_tiny_bundle("classifier", str(out / "runs" / "classifier" / "bundle"), tiny_shards, seed=3)
    editor = write_tiny_bundle("cvae", str(out / "runs" / "editor" / "bundle"), tiny_shards)
    quality = benchmark(str(out), synth_celeba, editor, classifier, slot_push=0.25)
    # Beside the bundle, where the served page reads each slider's figures
    assert quality["json"] == str(out / "runs" / "editor" / "quality" / "quality.json")
    with open(quality["json"]) as f:
        written = json.load(f)
    assert written["settings"]["slot_push"] == 0.25
    slots = [row for row in written["bundles"][0]["editing"]["rows"] if row["method"] == "slot"]
    assert [row["attribute"] for row in slots] == ["Smiling"]  # the tiny CVAE's one condition entry
    assert quality["condition_flip"] == slots[0]["flip_rate"]
    assert quality["sharpness"] == written["bundles"][0]["reconstruction"]["sharpness"] > 0
    assert quality["condition_followed"] == f"{int(slots[0]['flip_rate'] >= 0.9)} of 1"


def test_the_demos_pictures_of_a_conditional_model_edit_along_its_condition(tiny_shards, tmp_path):
    """The editor's reconstructions encode each face with its own attributes, and its traversal rows sweep
    condition entries (the edits it serves) from 0 to 1, so each row changes along it."""
    from facegen.bundle import load_bundle
    from facegen.data.shards import read_manifest
    from facegen.demo import draw_pictures
    from facegen.latent import grids
    from tests.serve.conftest import write_tiny_bundle

    model = load_bundle(write_tiny_bundle("cvae", str(tmp_path / "editor"), tiny_shards)).model
    pictures = draw_pictures(model, read_manifest(tiny_shards), str(tmp_path))
    assert set(pictures) == {"reconstructions", "samples", "traversals"}
    sizes = {name: Image.open(path).size for name, path in pictures.items()}
    (width, height), (tr_width, tr_height) = sizes["samples"], sizes["traversals"]
    assert sizes["reconstructions"][0] == width  # 8 faces a row over their reconstructions; 64 samples, 8 a row
    assert tr_width > width and tr_height < height  # 9 steps per row; one row per condition entry (the tiny has 1)

    from facegen.data.pipeline import read_examples
    val = read_examples(read_manifest(tiny_shards), "val", 64)
    cond = model.condition_of(val)
    dims = grids.most_active_dims(model, val["image"], k=8, cond=cond)
    condition = set(model.part_indices(("condition",)))
    assert dims and set(dims) <= condition
    codes = model.encode(val["image"], cond)
    values = grids.traversal_values(codes, dims, steps=9)
    assert torch.all(values[:, 0] == 0) and torch.all(values[:, -1] == 1)  # 0 -> 1: the attribute off, then on
    swept = grids.traverse(model, codes[0], dims, values).reshape(len(dims), 9, *val["image"].shape[1:])
    assert torch.all((swept[:, 0] - swept[:, -1]).abs().amax(dim=(1, 2, 3)) > 0)
