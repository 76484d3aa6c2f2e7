"""--flip: counterfactual variants of a conditional model, one attribute flipped per variant, labelled by the
whole new condition (the conditions' rules moving the entries the flipped one rules on)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from facegen.augment.celeba import read_source_labels
from facegen.augment.flips import flip_codes, flip_names, flipped_attribute
from facegen.augment.job import finish, plan_job
from facegen.augment.variants import EditVariants, read_sources
from facegen.bundle import load_bundle, write_bundle
from facegen.cli import main
from facegen.data.shards import read_manifest
from facegen.errors import FacegenError
from facegen.images import decode_face, from_uint8
from facegen.latent.conditions import ConditionTable
from facegen.models import build_model
from tests.augment.test_augment import _args, bundle, sources  # noqa: F401 (fixtures)
from tests.tiny import tiny_config

NAMES = ("Black_Hair", "Blond_Hair", "Male", "Smiling")


def _model(names=NAMES, shards: str | None = None):
    cfg = tiny_config("cvae", data={"shards": shards} if shards else {})
    cfg = type(cfg)(**{**cfg.__dict__, "model": type(cfg.model)(**{**cfg.model.__dict__,
                                                                   "condition_attributes": list(names)})})
    torch.manual_seed(0)
    return cfg, build_model(cfg.model).eval()


@pytest.fixture(scope="module")
def cvae_bundle(tiny_shards, tmp_path_factory) -> str:
    cfg, model = _model(shards=tiny_shards)
    manifest = read_manifest(tiny_shards)
    meta = {"dataset": "celeba", "resolution": 32, "attribute_names": list(manifest.attribute_names)}
    return write_bundle(str(tmp_path_factory.mktemp("flip") / "cvae"), config=cfg.to_dict(),
                        weights=model.state_dict(), meta=meta)


def test_names_and_the_attribute_each_variant_flips():
    _, model = _model()
    assert flip_names("all", model) == NAMES and flip_names(" Male,Smiling ", model) == ("Male", "Smiling")
    for text, message in (("Eyeglasses", "not an attribute slot"), ("Male,Male", "distinct"), (",", "distinct")):
        with pytest.raises(FacegenError, match=message):
            flip_names(text, model)
    with pytest.raises(FacegenError, match="conditioned on attributes"):
        flip_names("all", build_model(tiny_config("vae").model))
    drawn = [flipped_attribute(NAMES, 3, "a/face0.png", k) for k in range(1, 5)]
    assert sorted(drawn) == sorted(NAMES)  # K <= the list: no attribute twice
    assert drawn == [flipped_attribute(NAMES, 3, "a/face0.png", k) for k in range(1, 5)]  # (seed, source, k) only
    firsts = {flipped_attribute(NAMES, 3, f"face{i}.png", 1) for i in range(40)}
    assert len(firsts) > 1  # sources get different flips


def test_a_flip_sets_the_opposite_and_moves_what_it_rules_on():
    _, model = _model()
    # Hair colours exclude each other; Male and Smiling are independent of them and of each other
    faces = [(h, 1 - h, m, s) for h in (0, 1) for m in (0, 1) for s in (0, 1) for _ in range(20)]
    table = ConditionTable.fit(NAMES, torch.tensor(faces, dtype=torch.float32))
    z = torch.randn(3, model.config.latent_dim)
    cond = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 1]])
    codes = torch.cat([z, cond], 1)
    edited, changes = flip_codes(model, codes, ["Blond_Hair", "Smiling", "Male"], table)
    assert torch.equal(edited[:, :z.shape[1]], z)  # the face's code is untouched
    assert edited[:, z.shape[1]:].tolist() == [[0, 1, 1, 0], [0, 1, 0, 0], [1, 0, 1, 1]]
    assert changes == [{"Black_Hair": 0, "Blond_Hair": 1}, {"Smiling": 0}, {"Male": 1}]
    _, alone = flip_codes(model, codes, ["Blond_Hair"] * 3, None)  # no table: the entry alone
    assert alone == [{"Blond_Hair": 1}, {"Blond_Hair": 0}, {"Blond_Hair": 1}]
    # Pushed past 0/1: the flipped entry goes further, the rules and the 0/1 labels stay the same
    pushed, same = flip_codes(model, codes, ["Blond_Hair", "Smiling", "Male"], table, push=0.5)
    assert pushed[:, z.shape[1]:].tolist() == [[0, 1.5, 1, 0], [0, 1, 0, -0.5], [1, 0, 1.5, 1]]
    assert same == changes


def test_variants_are_the_decoded_flips_labelled_by_their_new_condition(cvae_bundle, sources, tmp_path):
    out = tmp_path / "out"
    job = plan_job(_args(bundle=cvae_bundle, images=sources["folder"], out=out, flip="all", variants=3,
                         layout="celeba", labels=sources["labels"], fit_rows=64, seed=5, slot_push=0.25))
    assert job.spec.method == "flip" and job.conditions is not None and job.conditions.names == NAMES
    udf = EditVariants(job.bundle, job.out, job.spec, job.directions, conditions=job.conditions)
    rows = udf(read_sources(pa.Table.from_pylist(job.items), root=job.images)).to_pylist()
    assert finish(job, rows) == 0
    written = [r for r in rows if r["output"] is not None]
    assert len(written) == 4 * 3  # 4 train faces (the test face is left out), 3 variants each
    labels = read_source_labels(str(out / "list_attr_celeba.txt"))
    model = load_bundle(cvae_bundle).model
    for source in {r["source"] for r in written}:
        mine = sorted((r for r in written if r["source"] == source), key=lambda r: r["variant"])
        flipped = [next(iter(json.loads(r["edits"]))) for r in mine]
        assert len(set(flipped)) == 3  # three different attributes
        truth = sources["truth"][os.path.basename(source)]
        blob = open(source, "rb").read()
        face = from_uint8(np.asarray(decode_face(blob, job.spec.crop, 32)))[None]
        cond = model.condition_of({"image": face, "attrs": torch.tensor([job.labels.celeba_vector(
            os.path.basename(source))], dtype=torch.float32)})
        with torch.no_grad():
            codes = model.encode(face, cond)
        for row, name in zip(mine, flipped):
            relabels = json.loads(row["relabels"])
            assert relabels[name] == 1 - truth[name]  # the flip: the opposite of the source's label
            assert json.loads(row["edits"])[name] == (1.25 if relabels[name] else -0.25)  # the value set
            got = dict(zip(labels.names, labels.attrs[row["output"].split("/", 1)[1]]))
            assert got == {a: relabels.get(a, v) for a, v in truth.items()}  # the new condition, rest the source's
            with torch.no_grad():
                expected = model.decode(flip_codes(model, codes, [name], job.conditions, push=0.25)[0])[0]
            image = from_uint8(np.asarray(Image.open(out / row["output"], formats=["PNG"])))
            assert (image - expected).abs().max() <= 1 / 127.5 + 1e-6  # the decoded flip, PNG rounding only


@pytest.mark.parametrize("extra, message", [
    ({"flip": "all", "edits": "Male:1"}, "give one of --edits"),
    ({}, "give one of --edits"),
    ({"flip": "all", "relabel": True, "guide": "x"}, "does not go with --relabel"),
    ({"flip": "Eyeglasses"}, "'Eyeglasses' is not an attribute slot"),
    ({"flip": "all", "labels": None}, "--flip needs --labels"),
    ({"flip": "all", "slot-push": "1.5"}, "--slot-push goes with --flip and must be in [0, 1], got 1.5"),
    ({"edits": "Male:1", "slot-push": "0.5"}, "--slot-push goes with --flip"),
])
def test_bad_flip_requests_are_one_line(cvae_bundle, sources, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    given = {"labels": sources["labels"], **extra}
    argv = ["augment", "--bundle", cvae_bundle, "--images", sources["folder"], "--out", str(out)]
    for key, value in given.items():
        if value is not None:
            argv += [f"--{key}"] + ([] if value is True else [value])
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()


def test_a_model_without_attribute_slots_cannot_flip(bundle, sources, tmp_path, capsys):  # noqa: F811
    argv = ["augment", "--bundle", bundle, "--images", sources["folder"], "--out", str(tmp_path / "o"),
            "--flip", "all", "--labels", sources["labels"]]
    assert main(argv) == 2
    assert "--flip needs a model conditioned on attributes" in capsys.readouterr().err


def test_flip_variants_through_ray_data_match_the_in_process_ones(ray_session, cvae_bundle, sources, tmp_path):
    """The real job (Ray Data actor pool, the condition table shipped to the actors) writes what the UDF writes
    in-process: same flips, same labels, same pixels."""
    common = ["--bundle", cvae_bundle, "--images", sources["folder"], "--flip", "Male,Smiling", "--variants", "2",
              "--layout", "celeba", "--labels", sources["labels"], "--fit-rows", "64", "--batch-size", "2"]
    assert main(["augment", *common, "--out", str(tmp_path / "ray")]) == 0
    job = plan_job(_args(**{k.lstrip("-").replace("-", "_"): v for k, v in zip(common[::2], common[1::2])},
                         out=tmp_path / "local"))
    udf = EditVariants(job.bundle, job.out, job.spec, job.directions, conditions=job.conditions)
    finish(job, job.rows + udf(read_sources(pa.Table.from_pylist(job.items), root=job.images)).to_pylist())
    ray_rows, local_rows = ([{**row, "error": row["error"] and row["error"].split(" (")[0]}  # drop PIL's object id
                             for row in map(json.loads, (tmp_path / d / "manifest.jsonl").read_text().splitlines())]
                            for d in ("ray", "local"))
    assert ray_rows == local_rows  # same sources, flips, labels and output names
    assert sum(row["method"] == "flip" for row in ray_rows) == 4 * 2 + 1  # + the corrupt file's error row
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()
    for row in ray_rows:
        if row["output"]:
            pair = [np.asarray(Image.open(tmp_path / d / row["output"]), dtype=int) for d in ("ray", "local")]
            assert np.abs(pair[0] - pair[1]).max() <= 1  # batches of 2 vs one batch: PNG rounding at most
