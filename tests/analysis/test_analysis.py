"""The analysis job end to end on tiny bundles (no Ray): report files, sections, directions stored in the bundle."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from facegen.cli import job_main, main
from tests.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTIONS = {"traversals", "naming", "directions", "evaluation", "disentanglement", "maps"}


def write_tiny_bundle(family: str, dest: str, shards: str) -> str:
    """An untrained tiny model of ``family`` as a bundle (analysis does not care how good it is)."""
    from facegen.bundle import write_bundle
    from facegen.data.shards import read_manifest
    from facegen.models import build_model
    from facegen.training.trainer import bundle_meta

    torch.manual_seed(0)
    cfg = tiny_config(family, data={"shards": shards})
    write_bundle(dest, config=cfg.to_dict(), weights=build_model(cfg.model).state_dict(),
                 meta=bundle_meta(read_manifest(shards), [], [0]))
    return dest


@pytest.fixture(scope="module")
def bundles(tiny_shards, tiny_fairface_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis_bundles")
    return {name: write_tiny_bundle(name.split("-")[0], str(root / name), shards)
            for name, shards in (("vae", tiny_shards), ("cvae", tiny_shards), ("infogan", tiny_shards),
                                 ("classifier", tiny_shards), ("ae-fairface", tiny_fairface_shards))}


def analyze(*args: str) -> dict:
    """Run the job's entry point in-process; returns analysis.json."""
    out = args[args.index("--out") + 1]
    assert job_main("analyze", "", list(args)) == 0
    with open(f"{out}/analysis.json") as fh:
        return json.load(fh)


def test_job_writes_the_report_and_stores_directions_the_bundle_loads_back(bundles, tiny_shards, tmp_path):
    from facegen.bundle import load_bundle
    from facegen.data.shards import read_manifest
    from facegen.analysis.data import read_keyed_examples
    from facegen.latent.directions import fit_directions
    from facegen.latent.store import stored_directions

    out = str(tmp_path / "report")
    report = analyze("--bundle", bundles["vae"], "--classifier", bundles["classifier"], "--out", out,
                     "--n", "96", "--n-eval", "32")
    assert set(report["sections"]) == SECTIONS and report["family"] == "vae"
    with open(f"{out}/analysis.md") as fh:
        markdown = fh.read()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(pictures) >= 6 and all(os.path.getsize(f"{out}/{p}") > 0 for p in pictures)
    assert "<table>" in open(f"{out}/analysis.html").read()

    evaluation = report["sections"]["evaluation"]
    assert evaluation["judges"] == ["classifier", "probe"] and evaluation["methods"] == ["mean_diff", "boundary",
                                                                                       "conditional"]
    assert len(evaluation["attributes"]) == 5 and "race=White" in evaluation["groups"]["mean_diff"]
    assert "synthetic ground truth" in evaluation["group_source"]
    assert report["sections"]["naming"]["dimensions"], "a classifier was given: dimensions are named"
    scores = report["sections"]["disentanglement"]["scores"]
    assert {"mig", "sap", "dci_disentanglement"} <= set(scores)
    assert "yaw" in report["sections"]["disentanglement"]["factors"]

    # The stored directions are exactly those of the training codes (the bundle's model is unchanged).
    bundle = load_bundle(bundles["vae"])
    batch, _ = read_keyed_examples(read_manifest(tiny_shards), "train", 96)
    names = list(report["sections"]["directions"]["attributes"])
    columns = [bundle.attribute_names.index(n) for n in names]
    codes = bundle.model.encode(batch["image"]).detach()
    for method in ("mean_diff", "boundary"):
        stored = stored_directions(bundle.extras, method)
        fitted = fit_directions(codes, batch["attrs"][:, columns], names, method=method)
        assert stored.names == fitted.names and stored.method == method
        assert torch.allclose(stored.vectors, fitted.vectors, atol=1e-5)
        assert torch.allclose(stored.scales, fitted.scales, atol=1e-5)


@pytest.mark.parametrize("name, expected", [
    ("cvae", "condition"),  # a CVAE edits its condition attributes by their slots
    ("infogan", "codes"),   # an InfoGAN by the code setting that moves the attribute most
])
def test_each_family_is_evaluated_with_its_own_lever(bundles, tmp_path, name, expected):
    out = str(tmp_path / name)
    report = analyze("--bundle", bundles[name], "--classifier", bundles["classifier"], "--out", out, "--n", "64",
                     "--n-eval", "24", "--attributes", "Smiling,Eyeglasses")
    evaluation = report["sections"]["evaluation"]
    assert expected in evaluation["methods"]
    own = [cells[expected] for cells in evaluation["attributes"].values() if expected in cells]
    assert own and all("classifier" in cell["judges"] for cell in own)
    if name == "infogan":
        assert {d["label"] for d in report["sections"]["naming"]["dimensions"]} <= {"continuous/0", "continuous/1"}
        assert any("categorical" in caption for caption in report["sections"]["traversals"]["pictures"])
    else:
        assert "condition left out" in open(f"{out}/analysis.md").read()


def test_autoencoder_on_fairface_without_classifier(bundles, tmp_path):
    from facegen.bundle import load_bundle
    from facegen.latent.sampler import GMMSampler, load_sampler

    out = str(tmp_path / "ae")
    report = analyze("--bundle", bundles["ae-fairface"], "--out", out, "--n", "64", "--n-eval", "24")
    assert set(report["sections"]) == SECTIONS | {"sampler"}
    assert report["sections"]["naming"]["skipped"] == "no classifier"
    assert report["sections"]["traversals"]["rows"][0] == "PC1"
    evaluation = report["sections"]["evaluation"]
    assert evaluation["judges"] == ["probe"] and evaluation["group_source"] == "the dataset's FairFace labels"
    assert "synthetic ground truth" in report["sections"]["directions"]["labels"]  # FairFace: labels from factors
    extras = load_bundle(bundles["ae-fairface"]).extras
    sampler = load_sampler(extras)
    assert isinstance(sampler, GMMSampler) and sampler.n_components == report["sections"]["sampler"]["n_components"]
    assert "directions/boundary/vectors" in extras


@pytest.mark.parametrize("args, message", [
    (["--bundle", "/nonexistent/bundle"], "/nonexistent/bundle: not a model bundle"),
    (["--bundle", "{classifier}"], "is not a latent model"),
    (["--bundle", "{vae}", "--classifier", "{vae}"], "needs an attribute classifier bundle"),
    (["--bundle", "{vae}", "--shards", "/nonexistent/shards"], "no manifest"),
    (["--bundle", "{vae}", "--factors", "/nonexistent/factors.parquet"], "--factors /nonexistent/factors.parquet"),
    (["--bundle", "{vae}", "--attributes", "Smilling", "--n", "32", "--n-eval", "8"], "'Smilling' is not a labelled"),
    (["--bundle", "{vae}", "--n", "5"], "--n must be >= 20"),
])
def test_user_mistakes_are_one_line(bundles, tmp_path, capsys, args, message):
    args = [a.format(**{k.replace("-", "_"): v for k, v in bundles.items()}) for a in args]
    assert main(["analyze", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_job_script_reports_errors_in_one_line():
    result = subprocess.run([sys.executable, "jobs/analyze.py", "--bundle", "/nonexistent/bundle"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
