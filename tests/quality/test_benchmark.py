"""``facegen evaluate``: known answers of the benchmark's metric plumbing, and the real command on tiny bundles.

No Ray: bundles are built in-process (``build_model`` + ``write_bundle``), data are the session's 32 px shards
and counterfactual sets written from the same synthetic dataset.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.bundle import write_bundle
from facegen.cli import main
from facegen.data.counterfactual import write_counterfactuals
from facegen.data.pipeline import read_examples
from facegen.data.shards import read_manifest
from facegen.models import build_model
from facegen.models.base import LatentModel, LatentPart
from facegen.quality.edits import score_edits
from facegen.quality.judge import load_judge
from facegen.quality.sections import (
    classifier_scores,
    code_accuracy,
    generation,
    judged_attributes,
    reconstruction,
    training_budget,
)
from tests.conftest import one_thread
from tests.tiny import tiny_config

JUDGED = ["Smiling", "Eyeglasses", "Male", "Young", "Wearing_Hat", "No_Beard"]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


def _bundle(dest: str, family: str, seed: int, model_overrides: dict | None = None, **meta) -> str:
    cfg = tiny_config(family)
    raw = cfg.to_dict()
    raw["model"].update(model_overrides or {})
    from facegen.config import from_dict

    cfg = from_dict(raw)
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    meta = {"dataset": "celeba", "resolution": 32, "attribute_names": list(CELEBA_ATTRIBUTES), **meta}
    return write_bundle(dest, config=cfg.to_dict(), weights=model.state_dict(), meta=meta)


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory) -> str:
    return _bundle(str(tmp_path_factory.mktemp("judge") / "bundle"), "classifier", seed=17,
                   model_overrides={"attributes": JUDGED})


@pytest.fixture(scope="module")
def test_batch(tiny_shards):
    return read_examples(read_manifest(tiny_shards), "test", 24)


class Identity(LatentModel):
    """encode = flatten, decode = unflatten: reconstructions are the originals exactly."""

    family = "identity"

    def __init__(self, side: int = 32) -> None:
        super().__init__(None)
        self.side = side
        self.latent_parts = (LatentPart("z", 3 * side * side, "gaussian"),)

    def encode(self, images, cond=None):
        return images.flatten(1)

    def decode(self, z, cond=None):
        return z.view(-1, 3, self.side, self.side)


def test_identity_reconstruction_has_infinite_psnr_and_full_agreement(judge_dir, test_batch, tiny_shards):
    judge = load_judge(judge_dir)
    labels = list(read_manifest(tiny_shards).attribute_names)
    names = judged_attributes(judge, labels, test_batch["attrs"])
    assert names and set(names) <= set(JUDGED)
    out, recon = reconstruction(Identity(), judge, test_batch, labels, names)
    assert torch.equal(recon, test_batch["image"])
    assert out["psnr"] == math.inf and out["ssim"] == pytest.approx(1.0) and out["sharpness"] == pytest.approx(1.0)
    assert out["agreement"] == pytest.approx(1.0)
    assert all(v["agreement"] == pytest.approx(1.0) for v in out["per_attribute"].values())


def test_training_images_as_samples_score_the_floors_and_test_images_the_judges_own_tv(judge_dir, test_batch,
                                                                                      tiny_shards):
    judge, manifest = load_judge(judge_dir), read_manifest(tiny_shards)
    labels, train = list(manifest.attribute_names), read_examples(manifest, "train", 24)
    names = judged_attributes(judge, labels, test_batch["attrs"])
    cache: dict = {}
    as_train = generation(judge, train["image"], test_batch, train, labels, names, cache)
    assert as_train["fd"] == pytest.approx(as_train["fd_floor"], rel=1e-5)
    assert as_train["attribute_tv"] == pytest.approx(as_train["attribute_tv_floor"])
    as_test = generation(judge, test_batch["image"], test_batch, train, labels, names, cache)
    assert as_test["fd"] == pytest.approx(0, abs=1e-3)
    assert as_test["attribute_tv"] == pytest.approx(as_test["attribute_tv_judge"])


class LookupJudge:
    """Reads attributes perfectly: returns the labels registered for each image (by its bytes)."""

    def __init__(self, names, table: dict[bytes, torch.Tensor]) -> None:
        self.attribute_names, self.table = tuple(names), table

    def predict_proba(self, images):
        return torch.stack([self.table[img.numpy().tobytes()] for img in images])


def _pairs(n=6, side=16):
    g = torch.Generator().manual_seed(3)
    originals = torch.rand(n, 3, side, side, generator=g) * 2 - 1
    counterfactuals = (originals + 0.3 * torch.randn(n, 3, side, side, generator=g)).clamp(-1, 1)
    names = ["Smiling", "Male", "Young"]
    labels = torch.randint(0, 2, (n, 3), generator=g).float()
    labels[:, 0] = torch.tensor([0, 1] * (n // 2)).float()  # both edit directions
    targets = 1 - labels[:, 0].long()
    flipped = labels.clone()
    flipped[:, 0] = targets.float()
    return names, originals, counterfactuals, labels, flipped, targets


def test_the_counterfactual_as_edit_flips_everything_with_infinite_fidelity():
    names, originals, cfs, labels, flipped, targets = _pairs()
    table = {**{o.numpy().tobytes(): l for o, l in zip(originals, labels)},
             **{c.numpy().tobytes(): f for c, f in zip(cfs, flipped)}}
    out = score_edits(LookupJudge(names, table), names, "Smiling", originals, originals, cfs, cfs, labels, targets)
    assert out["flip_rate"] == 1.0 and out["drift"] == 0.0
    assert out["fidelity_psnr"] == math.inf and out["fidelity_ssim"] == pytest.approx(1.0)
    assert out["recon_psnr"] == math.inf and out["unedited_psnr"] < 30
    assert set(out["drift_per_attribute"]) == {"Male", "Young"}


def test_swapped_labels_or_no_edit_flip_nothing():
    names, originals, cfs, labels, _, targets = _pairs()
    # The judge reads each counterfactual with its original's labels: the edit did not take.
    swapped = {**{o.numpy().tobytes(): l for o, l in zip(originals, labels)},
               **{c.numpy().tobytes(): l for c, l in zip(cfs, labels)}}
    out = score_edits(LookupJudge(names, swapped), names, "Smiling", originals, originals, cfs, cfs, labels, targets)
    assert out["flip_rate"] == 0.0 and out["fidelity_psnr"] == math.inf
    # No edit at all: the edit is the reconstruction, which scores what doing nothing scores.
    same = score_edits(LookupJudge(names, swapped), names, "Smiling", originals, originals, originals, cfs, labels,
                       targets)
    assert same["flip_rate"] == 0.0 and same["drift"] == 0.0
    assert same["fidelity_psnr"] == same["unedited_psnr"] < math.inf


def test_perfect_heads_and_perfect_codes_score_one():
    truth = {"race": torch.tensor([0, 1, 2, -1]), "age": torch.tensor([0, 3, 8, 4]), "gender": torch.full((4,), -1)}

    class Heads:
        def predict_proba(self, images):
            n = images.shape[0]
            return {"race": torch.nn.functional.one_hot(truth["race"].clamp(min=0), 7).float()[:n],
                    "age": torch.nn.functional.one_hot((truth["age"] + 1).clamp(max=8), 9).float()[:n],
                    "gender": torch.full((n, 2), 0.5)}

    out = classifier_scores(Heads(), {"image": torch.zeros(4, 3, 8, 8), **truth}, [])
    assert out["heads"]["race"] == {"n": 3, "accuracy": 1.0, "balanced_accuracy": 1.0}
    assert out["heads"]["age"]["accuracy"] < 1 and out["heads"]["age"]["within_one_bin"] == 1.0
    assert "gender" not in out["heads"]  # no labelled row

    class Coded(LatentModel):  # the class is written in pixel (0, 0, 0); the code reads it back, renamed
        family = "coded"

        def __init__(self):
            super().__init__(None)
            self.latent_parts = (LatentPart("code0", 3, "categorical"),)

        def encode(self, images, cond=None):
            return torch.nn.functional.one_hot((2 - images[:, 0, 0, 0].round().long()), 3).float()

    labels = torch.tensor([0, 1, 2, 2, -1, 1])
    images = torch.zeros(6, 3, 4, 4)
    images[:, 0, 0, 0] = labels.clamp(min=0).float()
    assert code_accuracy(Coded(), {"image": images, "label": labels}) == {"n_labelled": 5, "code0": 1.0}


def test_training_budget_from_history():
    cfg = tiny_config("vae", train={"num_workers": 2, "cpus_per_worker": 0.5})
    meta = {"history": [{"epoch": 1, "train/images_per_s": 50.0}, {"epoch": 2, "train/images_per_s": 100.0}],
            "starts": [0, 1], "best_epoch": 2}
    out = training_budget(meta, cfg, train_rows=100)
    assert out["images_seen"] == 200 and out["train_seconds"] == pytest.approx(3.0)
    assert out["cpus"] == 1.0 and out["cpu_minutes"] == pytest.approx(3.0 / 60) and out["resumes"] == 1
    assert training_budget({}, cfg, 100)["found"].startswith("no training history")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, synth_celeba):
    root = tmp_path_factory.mktemp("runs")
    history = [{"epoch": 1, "train/images_per_s": 40.0, "val/loss": 1.0}]
    for i, family in enumerate(("vae", "cvae", "ae", "infogan", "classifier")):
        _bundle(str(root / family / "bundle"), family, seed=i, history=history, starts=[0], best_epoch=1)
    cf = str(tmp_path_factory.mktemp("cf"))
    write_counterfactuals(synth_celeba, cf, ["Smiling", "Eyeglasses"], n=6, seed=0, resolution=32)
    return str(root), cf


def test_the_command_evaluates_every_family(run_folder, judge_dir, tiny_shards, tmp_path, capsys):
    runs, cf = run_folder
    out = tmp_path / "quality"
    rc = main(["evaluate", "--runs", runs, "--judge", judge_dir, "--shards", tiny_shards, "--counterfactuals", cf,
               "--out", str(out), "--n", "32", "--edit-n", "4", "--seed", "1"])
    assert rc == 0, capsys.readouterr().err
    for name in ("quality.md", "quality.html", "quality.json"):
        assert (out / name).is_file()
    body = json.loads((out / "quality.json").read_text())
    assert set(body) >= {"header", "judge", "settings", "bundles", "sections"}
    assert body["judge"]["bundle"] == judge_dir and body["settings"]["n"] == 32
    by_family = {b["family"]: b for b in body["bundles"]}
    assert set(by_family) == {"vae", "cvae", "ae", "infogan", "classifier"}
    for family in ("vae", "cvae", "ae", "infogan"):
        b = by_family[family]
        assert b["split"] == "test" and b["reconstruction"]["psnr"] > 0 and b["generation"]["fd"] >= 0
        assert b["generation"]["fd_floor"] >= 0 and 0 <= b["generation"]["attribute_tv"] <= 1
        assert os.path.isfile(out / b["pictures"]["samples"])
        assert b["budget"]["images_seen"] is not None and b["budget"]["cpu_minutes"] > 0
    ae = by_family["ae"]["generation"]
    assert "Gaussian mixture" in ae["sampler"] and "fitted on 128 training codes" in ae["sampler"]  # all train rows
    assert 0 <= ae["attribute_tv_floor"] <= 1 and 0 <= ae["attribute_tv_judge"] <= 1
    rows = by_family["cvae"]["editing"]["rows"]  # Smiling is the CVAE's own slot
    assert {(r["attribute"], r["method"]) for r in rows if r["attribute"] == "Smiling"} == {
        ("Smiling", "counterfactual"), ("Smiling", "slot")}
    # First per attribute, the renderer's own edit: pixel-identical to the counterfactual, read from the original
    ceiling = [r for r in rows if r["method"] == "counterfactual"]
    assert ceiling and all(r["fidelity_ssim"] == pytest.approx(1.0) and r["fidelity_psnr"] is None  # inf in JSON
                           for r in ceiling)
    methods = {r["method"] for r in by_family["vae"]["editing"]["rows"]} - {"counterfactual"}
    assert methods and methods <= {"mean_diff", "boundary"}
    assert all(0 <= r["flip_rate"] <= 1 for r in rows)
    assert by_family["infogan"]["codes"] is None  # the synthetic faces carry no class label
    assert 0 <= by_family["classifier"]["classifier"]["mean_balanced_accuracy"] <= 1
    md = (out / "quality.md").read_text()
    assert judge_dir in md and "| bundle | n | PSNR dB |" in md and "FD floor" in md and "flip rate" in md


def test_refuses_a_judge_a_model_trained_against(judge_dir, tiny_shards, tmp_path, capsys):
    vae = _bundle(str(tmp_path / "vae"), "vae", seed=0,
                  model_overrides={"recon_loss": "perceptual", "perceptual": {"path": judge_dir + "/"}})
    rc = main(["evaluate", "--bundles", vae, "--judge", judge_dir, "--shards", tiny_shards,
               "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --judge") and "model.perceptual.path" in err[0]
    assert not (tmp_path / "q").exists()
    rc = main(["evaluate", "--bundles", judge_dir, "--judge", vae, "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "attribute classifier" in err[0]


def test_guided_edits_are_steered_by_a_guide_that_is_not_the_judge(run_folder, judge_dir, tiny_shards, tmp_path,
                                                                   capsys):
    runs, cf = run_folder
    guide = _bundle(str(tmp_path / "guide"), "classifier", seed=23, model_overrides={"attributes": JUDGED})
    common = ["--bundles", f"{runs}/vae/bundle", "--judge", judge_dir, "--shards", tiny_shards,
              "--counterfactuals", cf, "--n", "16", "--edit-n", "4", "--attributes", "Smiling"]
    rc = main(["evaluate", *common, "--guide", judge_dir, "--out", str(tmp_path / "refused")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --guide") and "is the judge" in err[0]
    rc = main(["evaluate", *common, "--guide", guide, "--residual", "--out", str(tmp_path / "q")])
    assert rc == 0, capsys.readouterr().err
    (bundle,) = json.loads((tmp_path / "q" / "quality.json").read_text())["bundles"]
    rows = {r["method"]: r for r in bundle["editing"]["rows"]}
    assert set(rows) == {"counterfactual", "mean_diff", "boundary", "guided", "mean_diff+residual",
                         "boundary+residual", "guided+residual"}
    # Composed in pixels, the picture is the original plus the decode's change: nearer the counterfactual
    # than the decode itself wherever the reconstruction is blurry.
    assert rows["guided+residual"]["recon_psnr"] == rows["guided"]["recon_psnr"]
    assert 0 <= rows["guided"]["flip_rate"] <= 1 and rows["guided"]["step"] is None
    assert bundle["editing"]["directions"]["guided"] == f"guide {guide}"
    assert "guided" in (tmp_path / "q" / "quality.md").read_text()


def test_conditions_read_by_the_guide_replace_the_true_labels_of_what_it_reads():
    from facegen.config import from_dict
    from facegen.latent.guided import Guide
    from facegen.quality.edits import read_attributes

    raw = tiny_config("classifier").to_dict()
    raw["model"]["attributes"] = ["Smiling", "Male"]
    model = build_model(from_dict(raw).model).eval()
    with torch.no_grad():  # a reader that is sure: smiling always, male never
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([20.0, -20.0]))
    attrs = torch.zeros(3, len(CELEBA_ATTRIBUTES))
    attrs[:, CELEBA_ATTRIBUTES.index("Male")] = 1
    attrs[:, CELEBA_ATTRIBUTES.index("Young")] = 1
    read = read_attributes(Guide(model, resolution=32), torch.zeros(3, 3, 32, 32), attrs)
    assert read[:, CELEBA_ATTRIBUTES.index("Smiling")].tolist() == [1, 1, 1]
    assert read[:, CELEBA_ATTRIBUTES.index("Male")].tolist() == [0, 0, 0]  # the reading, not the label
    assert read[:, CELEBA_ATTRIBUTES.index("Young")].tolist() == [1, 1, 1]  # not read: the label stays


def test_the_cvae_can_be_evaluated_on_conditions_the_guide_reads(run_folder, judge_dir, tiny_shards, tmp_path,
                                                                   capsys):
    runs, cf = run_folder
    guide = _bundle(str(tmp_path / "guide"), "classifier", seed=29, model_overrides={"attributes": JUDGED})
    common = ["evaluate", "--bundles", f"{runs}/cvae/bundle", "--judge", judge_dir, "--shards", tiny_shards,
              "--counterfactuals", cf, "--n", "16", "--edit-n", "4", "--attributes", "Smiling"]
    assert main([*common, "--read-conditions", "--out", str(tmp_path / "no")]) == 2
    assert "--read-conditions needs --guide" in capsys.readouterr().err
    assert main([*common, "--guide", guide, "--read-conditions", "--out", str(tmp_path / "q")]) == 0
    body = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert body["settings"]["read_conditions"] is True and body["settings"]["guide"] == guide
    assert {r["method"] for r in body["bundles"][0]["editing"]["rows"]} >= {"counterfactual", "slot"}


def test_slot_edits_pushed_past_the_target_reach_the_decoder(run_folder, judge_dir, tiny_shards, tmp_path, capsys):
    runs, cf = run_folder
    common = ["evaluate", "--bundles", f"{runs}/cvae/bundle", "--judge", judge_dir, "--shards", tiny_shards,
              "--counterfactuals", cf, "--n", "16", "--edit-n", "4", "--attributes", "Smiling"]
    assert main([*common, "--slot-push", "1.5", "--out", str(tmp_path / "no")]) == 2
    assert "--slot-push: must be in [0, 1]" in capsys.readouterr().err
    slots = {}
    for push in ("0", "0.5"):
        assert main([*common, "--slot-push", push, "--out", str(tmp_path / push)]) == 0
        body = json.loads((tmp_path / push / "quality.json").read_text())
        assert body["settings"]["slot_push"] == float(push)
        (slots[push],) = [r for r in body["bundles"][0]["editing"]["rows"] if r["method"] == "slot"]
    assert slots["0"]["step"] == 0 and slots["0.5"]["step"] == 0.5
    # The same codes decoded under 1.5 / -0.5 instead of 1 / 0: another picture, so another fidelity
    assert slots["0"]["fidelity_psnr"] != pytest.approx(slots["0.5"]["fidelity_psnr"], abs=1e-6)
    assert slots["0"]["recon_psnr"] == pytest.approx(slots["0.5"]["recon_psnr"])


def test_a_bundle_of_other_data_is_listed_not_evaluated(judge_dir, tiny_shards, tmp_path):
    from facegen.quality.benchmark import Settings, evaluate

    vae = _bundle(str(tmp_path / "vae64"), "vae", seed=0, model_overrides={"resolution": 64})
    paths = evaluate([vae], judge_dir, str(tmp_path / "q"), tiny_shards, Settings(n=8))
    (bundle,) = json.loads(open(paths["json"]).read())["bundles"]
    assert "reconstruction" not in bundle and "not evaluated: a 64 px model" in bundle["notes"][0]


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--judge" in text and "--counterfactuals" in text and "--edit-n" in text


def test_wide_features_give_the_same_frechet_distance_as_the_covariance_form():
    """Judge features are often wider than the sample (3072 > 512): the Gram form must match the D x D one."""
    import numpy as np

    from facegen.quality.metrics import _psd_sqrt, frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 50)), rng.normal(size=(40, 50)) * 1.5 + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = _psd_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ cov_b @ root), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    # rel 1e-6: the D x D form adds the square roots of ~20 rounding-level eigenvalues (rank 29 of 50).
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-8)
