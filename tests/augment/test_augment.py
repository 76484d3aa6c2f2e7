"""Augmentation: variant strengths, refusals before any work, directions fitted when a bundle has none, and
one real Ray Data run (PNG sources + a corrupt file, CelebA-layout output read back by the CelebA reader)."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from facegen.bundle import load_bundle, write_bundle
from facegen.cli import main
from facegen.data.celeba import read_celeba
from facegen.data.pipeline import read_examples
from facegen.data.shards import read_manifest
from facegen.errors import FacegenError
from facegen.images import decode_face, from_uint8
from facegen.latent.edit import edit_codes
from facegen.augment.variants import AugmentSpec, EditVariants, parse_edits
from facegen.augment.job import add_augment_arguments, plan_job
from facegen.latent.store import directions_extras, fit_bundle_directions, stored_directions
from facegen.models import build_model
from tests.tiny import tiny_config

EDITS = "Smiling:+1,Eyeglasses:-2"


def _bundle(tiny_shards: str, dest: str, with_directions: bool) -> str:
    """An untrained tiny VAE (editing needs no training to be exercised) with directions fitted on 64 rows."""
    cfg = tiny_config("vae", data={"shards": tiny_shards})
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    manifest = read_manifest(tiny_shards)
    extras = None
    if with_directions:
        batch = read_examples(manifest, "train", 64)
        extras = directions_extras(fit_bundle_directions(model, batch, manifest.attribute_names, ["mean_diff"]))
    meta = {"dataset": "celeba", "resolution": 32, "attribute_names": list(manifest.attribute_names)}
    return write_bundle(dest, config=cfg.to_dict(), weights=model.state_dict(), meta=meta, extras=extras)


@pytest.fixture(scope="module")
def bundle(tiny_shards, tmp_path_factory) -> str:
    return _bundle(tiny_shards, str(tmp_path_factory.mktemp("aug") / "bundle"), with_directions=True)


@pytest.fixture(scope="module")
def sources(synth_celeba, tmp_path_factory) -> dict:
    """4 train faces and 1 test face as PNGs in sub-folders, a corrupt PNG, and their CelebA label files."""
    dataset = read_celeba(synth_celeba)
    train = [r for r in dataset.records if r.split == "train"][:4]
    test = [r for r in dataset.records if r.split == "test"][:1]
    root = tmp_path_factory.mktemp("sources")
    folder, rows, parts = root / "faces", [], []
    for i, record in enumerate(train + test):
        rel = f"{'ab'[i % 2]}/face{i}.png"
        os.makedirs(folder / rel.split("/")[0], exist_ok=True)
        Image.open(record.image_path).save(folder / rel)
        rows.append((f"face{i}.png", record.attrs))
        parts.append((f"face{i}.png", 2 if record in test else 0))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rows.append(("corrupt.png", train[0].attrs))
    parts.append(("corrupt.png", 0))
    lines = [str(len(rows)), " ".join(dataset.attribute_names)]
    lines += [" ".join([key, *("1" if v else "-1" for v in attrs)]) for key, attrs in rows]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{k} {c}\n" for k, c in parts))
    labels = {key: dict(zip(dataset.attribute_names, attrs)) for key, attrs in rows}
    return {"folder": str(folder), "labels": str(root / "list_attr_celeba.txt"), "truth": labels}


def _args(**values) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_augment_arguments(parser)
    argv = []
    for key, value in values.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return parser.parse_args(argv)


def test_variant_k_scales_direction_edits_and_sets_slots_as_given():
    spec = AugmentSpec(edits={"Smiling": 2.0, "code0": 3.0}, variants=4, fixed=frozenset({"code0"}))
    assert [spec.edits_for(k) for k in (1, 4)] == [{"Smiling": 0.5, "code0": 3.0}, {"Smiling": 2.0, "code0": 3.0}]
    jittered = AugmentSpec(edits={"Smiling": 2.0}, variants=2, jitter=0.5, seed=7)
    strengths = [jittered.edits_for(k)["Smiling"] for k in (1, 2)]
    assert strengths == [AugmentSpec(edits={"Smiling": 2.0}, variants=2, jitter=0.5, seed=7).edits_for(k)["Smiling"]
                         for k in (1, 2)]  # a function of (seed, k, attribute) only
    assert 0.5 <= strengths[0] <= 1.5 and 1.0 <= strengths[1] <= 3.0 and strengths != [1.0, 2.0]
    assert spec.output_name("a/b.jpg", 3) == "images/a/b__v3.png"
    assert parse_edits(" Smiling:+1, Eyeglasses:-0.5") == {"Smiling": 1.0, "Eyeglasses": -0.5}
    for bad in ("Smiling", "Smiling:x", ":1", "Smiling:1,Smiling:2"):
        with pytest.raises(FacegenError, match="--edits"):
            parse_edits(bad)


@pytest.mark.parametrize("extra, message", [
    ({"edits": "Smilling:+1"}, "unknown attribute 'Smilling' for "),
    ({"edits": "Smiling:+11"}, "|strength| must be <= 10"),
    ({"edits": "Smiling:+1", "keep": "Male"}, "keep=[...] only applies to method='conditional'"),
    ({"edits": "Smiling:+1", "layout": "celeba"}, "--layout celeba needs --labels"),
    ({"edits": "Smiling:+1", "crop": "wide"}, "--crop: expected auto, full or a side in pixels"),
])
def test_bad_requests_are_one_line_before_any_work(bundle, sources, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = ["augment", "--bundle", bundle, "--images", sources["folder"], "--out", str(out)]
    for key, value in extra.items():
        argv += [f"--{key}", value]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()  # refused before anything was written (or Ray started)


def test_a_bundle_without_directions_gets_them_fitted_on_its_training_shards(tiny_shards, sources, tmp_path,
                                                                               capsys):
    bare = _bundle(tiny_shards, str(tmp_path / "bare"), with_directions=False)
    job = plan_job(_args(bundle=bare, images=sources["folder"], out=tmp_path / "out", edits=EDITS, fit_rows=64))
    assert {"Smiling", "Eyeglasses"} <= set(job.directions.names) and job.directions.method == "mean_diff"
    assert "stores no mean_diff directions; fitted them on 64 train rows" in capsys.readouterr().err
    assert len(job.items) == 6 and all(item["edit"] for item in job.items)  # no labels: every file is edited


def test_ray_pipeline_writes_k_variants_labels_and_an_error_row(ray_session, bundle, sources, tmp_path, capsys):
    out, k = tmp_path / "out", 2
    code = main(["augment", "--bundle", bundle, "--images", sources["folder"], "--out", str(out), "--edits", EDITS,
                 "--variants", str(k), "--layout", "celeba", "--labels", sources["labels"], "--with-sources",
                 "--batch-size", "2", "--actors", "1,2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    errors = [r for r in rows if r["error"]]
    assert len(errors) == 1 and errors[0]["source"].endswith("corrupt.png")
    assert "corrupt.png: cannot decode image (" in errors[0]["error"]
    assert "corrupt.png: cannot decode image" in captured.err and "1 of 6 images could not be used" in captured.err
    variants = {}
    for row in rows:
        if row["error"]:
            continue
        path = out / row["output"]
        assert path.is_file() and Image.open(path).size == (32, 32), row
        variants.setdefault(os.path.basename(row["source"]), []).append(row["variant"])
        expected = {} if row["variant"] == 0 else {"Smiling": 0.5 * row["variant"], "Eyeglasses": -row["variant"]}
        assert row["edits"] == expected and row["method"] == "mean_diff"
    # train faces: the unedited copy + K variants; the test face is copied, never edited (it would leak)
    assert variants == {**{f"face{i}.png": [0, 1, 2] for i in range(4)}, "face4.png": [0]}

    dataset = read_celeba(str(out))  # the CelebA layout reads back with the edited labels
    by_key = {r.key: (dict(zip(dataset.attribute_names, r.attrs)), r.split) for r in dataset.records}
    assert len(by_key) == 4 * (k + 1) + 1
    for key, (labels, split) in by_key.items():
        source = key.split("/")[1].split("__")[0].removesuffix(".png") + ".png"
        truth = sources["truth"][source]
        if "__v" in key:
            assert split == "train" and labels["Smiling"] == 1 and labels["Eyeglasses"] == 0, key
            assert labels["Male"] == truth["Male"]  # attributes not edited keep the source's label
        else:
            assert labels == truth and split == ("test" if source == "face4.png" else "train"), key


def test_guided_variants_follow_the_guide_and_relabel_by_what_it_saw_change(ray_session, bundle, sources, tmp_path,
                                                                          capsys):
    """--method guided moves each face toward the guide's target; --relabel labels a variant by the source's
    labels with the manifest's ``relabels`` set (what the guide confirmed or saw drift)."""
    cfg = tiny_config("classifier")
    torch.manual_seed(1)
    guide = build_model(cfg.model).eval()  # untrained: still a differentiable reader to steer by
    meta = {"dataset": "celeba", "resolution": 32, "attribute_names": list(guide.attribute_names)}
    guide_dir = write_bundle(str(tmp_path / "guide"), config=cfg.to_dict(), weights=guide.state_dict(), meta=meta)
    argv = ["augment", "--bundle", bundle, "--images", sources["folder"], "--edits", "Smiling:+2", "--method", "guided"]
    assert main([*argv, "--out", str(tmp_path / "bad")]) == 2
    assert "--method guided needs --guide" in capsys.readouterr().err and not (tmp_path / "bad").exists()

    out = tmp_path / "out"
    code = main([*argv, "--out", str(out), "--variants", "2", "--guide", guide_dir, "--relabel", "--layout", "celeba",
                 "--labels", sources["labels"], "--with-sources", "--fit-rows", "64", "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    variants = [r for r in rows if not r["error"] and r["variant"]]
    assert len(variants) == 4 * 2 and {r["method"] for r in variants} == {"guided"}
    assert [r["edits"] for r in variants[:2]] == [{"Smiling": 1.0}, {"Smiling": 2.0}]  # bounds of the move

    dataset = read_celeba(str(out))
    by_key = {r.key: dict(zip(dataset.attribute_names, r.attrs)) for r in dataset.records}
    smiling = guide.attribute_names.index("Smiling")

    def read(rel):  # the guide's Smiling logit of a written PNG
        pixels = np.asarray(Image.open(out / rel, formats=["PNG"]).convert("RGB"))
        return from_uint8(pixels)[None]

    model, moved = load_bundle(bundle).model, []
    with torch.no_grad():
        for row in variants:
            truth = sources["truth"][os.path.basename(row["source"])]
            assert set(row["relabels"]) <= set(guide.attribute_names) and set(row["relabels"].values()) <= {0, 1}
            assert row["relabels"].get("Smiling", 1) == 1  # an edited attribute is only ever set to its target
            labels = by_key[row["output"].split("/", 1)[1]]
            assert labels == {a: row["relabels"].get(a, v) for a, v in truth.items()}, row
            source = row["output"].replace(f"__v{row['variant']}", "")  # the unedited copy, variant 0
            start = guide.logits(model.decode(model.encode(read(source))))[0, smiling]
            moved.append(float(guide.logits(read(row["output"]))[0, smiling] - start))
    assert sum(moved) / len(moved) > 0, moved  # the guide reads more smile than in the reconstructions


def test_residual_variants_carry_the_edit_on_the_sources_own_pixels(bundle, sources, tmp_path):
    """--residual writes source + (edited decode - reconstruction): the UDF run in-process on two faces."""
    loaded = load_bundle(bundle)
    directions = stored_directions(loaded.extras, "mean_diff")
    spec = AugmentSpec(edits={"Smiling": 2.0}, variants=1, residual=True)
    udf = EditVariants(bundle, str(tmp_path), spec, directions)
    rels = ["a/face0.png", "b/face1.png"]
    blobs = [open(os.path.join(sources["folder"], rel), "rb").read() for rel in rels]
    table = pa.table({"rel": rels, "source": rels, "data": blobs, "error": [None, None], "edit": [True, True]})
    rows = udf(table).to_pylist()
    assert [r["output"] for r in rows] == ["images/a/face0__v1.png", "images/b/face1__v1.png"]
    with torch.no_grad():
        faces = torch.stack([from_uint8(np.asarray(decode_face(b, spec.crop, 32))) for b in blobs])
        codes = loaded.model.encode(faces)
        expected = (faces + loaded.model.decode(edit_codes(loaded.model, codes, spec.edits, directions=directions))
                    - loaded.model.decode(codes)).clamp(-1, 1)
    written = torch.stack([from_uint8(np.asarray(Image.open(tmp_path / r["output"], formats=["PNG"]))) for r in rows])
    assert (written - expected).abs().max() <= 1 / 127.5 + 1e-6  # PNG rounding only
    assert (written - faces).abs().mean() < (written - loaded.model.decode(codes)).abs().mean()  # the source's pixels
