"""A resumable ``facegen evaluate``: a bundle whose stored result matches is reused, anything it was computed
from that changes (the bundle, a setting, a missing picture, ``--fresh``) evaluates it again. Real tiny bundles
and the session's 32 px shards, in-process."""

from __future__ import annotations

import json
import os

import pytest

from facegen.cli import main
from facegen.data.counterfactual import write_counterfactuals
from facegen.quality.resume import folder_names
from tests.quality.test_benchmark import _bundle, judge_dir, single_thread  # noqa: F401 (fixtures)

HISTORY = [{"epoch": 1, "train/images_per_s": 40.0, "val/loss": 1.0}]


@pytest.fixture(scope="module")
def counterfactuals(tmp_path_factory, synth_celeba) -> str:
    cf = str(tmp_path_factory.mktemp("cf"))
    write_counterfactuals(synth_celeba, cf, ["Eyeglasses"], n=4, seed=0, resolution=32)
    return cf


def _runs(root, families=("vae", "ae")) -> str:
    for i, family in enumerate(families):
        _bundle(str(root / f"{family}_run" / "bundle"), family, seed=i, history=HISTORY, starts=[0], best_epoch=1)
    return str(root)


def _evaluate(capsys, runs, judge, shards, cf, out, *extra) -> tuple[dict, str]:
    rc = main(["evaluate", "--runs", runs, "--judge", judge, "--shards", shards, "--counterfactuals", cf,
               "--out", str(out), "--n", "16", "--edit-n", "2", *extra])
    err = capsys.readouterr().err
    assert rc == 0, err
    body = json.loads((out / "quality.json").read_text())
    return {b["name"]: b for b in body["bundles"]}, err


def test_an_unchanged_bundle_is_reused_and_a_changed_one_evaluated_again(judge_dir, tiny_shards,  # noqa: F811
                                                                         counterfactuals, tmp_path, capsys):
    runs, out = _runs(tmp_path / "runs"), tmp_path / "quality"
    first, err = _evaluate(capsys, runs, judge_dir, tiny_shards, counterfactuals, out)
    assert set(first) == {"vae_run", "ae_run"} and "reused" not in err
    assert "vae_run: samples" in err and "vae_run: editing Eyeglasses (1 of 1)" in err  # progress of each step
    assert all(os.path.isfile(out / name / "result.json") for name in first)
    assert first["vae_run"]["pictures"]["samples"] == "vae_run/samples.png"

    again, err = _evaluate(capsys, runs, judge_dir, tiny_shards, counterfactuals, out)
    assert err.count("its stored result reused") == 2
    assert again == first  # every figure, inf fidelities and picture paths included

    # Retrained (a new bundle written over the old): evaluated again, the other still reused
    _bundle(f"{runs}/ae_run/bundle", "ae", seed=7, history=HISTORY, starts=[0], best_epoch=1)
    after, err = _evaluate(capsys, runs, judge_dir, tiny_shards, counterfactuals, out)
    assert err.count("its stored result reused") == 1 and "ae_run (ae):" in err
    assert after["vae_run"] == first["vae_run"]
    assert after["ae_run"]["reconstruction"]["psnr"] != first["ae_run"]["reconstruction"]["psnr"]

    # Another setting, or --fresh: nothing reused
    _, err = _evaluate(capsys, runs, judge_dir, tiny_shards, counterfactuals, out, "--seed", "3")
    assert "reused" not in err
    _, err = _evaluate(capsys, runs, judge_dir, tiny_shards, counterfactuals, out, "--seed", "3", "--fresh")
    assert "reused" not in err


def test_a_bundle_added_later_keeps_the_others_and_a_lost_picture_is_redrawn(judge_dir, tiny_shards,  # noqa: F811
                                                                             counterfactuals, tmp_path, capsys):
    runs, out = _runs(tmp_path / "runs", ("vae",)), tmp_path / "quality"
    _evaluate(capsys, runs, judge_dir, tiny_shards, counterfactuals, out)
    _runs(tmp_path / "runs", ("ae",))  # sorts before vae_run: a numbered folder scheme would shift
    both, err = _evaluate(capsys, runs, judge_dir, tiny_shards, counterfactuals, out)
    assert list(both) == ["ae_run", "vae_run"] and err.count("its stored result reused") == 1
    os.remove(out / "vae_run" / "samples.png")
    _, err = _evaluate(capsys, runs, judge_dir, tiny_shards, counterfactuals, out)
    assert err.count("its stored result reused") == 1 and "vae_run (vae):" in err
    assert os.path.isfile(out / "vae_run" / "samples.png")


def test_folder_names_are_run_names_made_unique():
    assert folder_names(["out/runs/vae_synth64/bundle", "s3://b/runs/vae_synth64/bundle/", "x/my model", "bundle"]) \
        == ["vae_synth64", "vae_synth64-2", "my_model", "bundle"]
