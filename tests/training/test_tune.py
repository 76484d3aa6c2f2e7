"""A tiny ASHA search end to end: two multi-worker Train trials, the best one exported, then restored."""

from __future__ import annotations

import os

import pytest
import yaml

from facegen.bundle import load_bundle
from facegen.config import apply_overrides
from facegen.errors import ConfigError
from facegen.training.tune import export_best, run_search
from facegen.training.search_space import read_search_spec
from tests.tiny import tiny_config

pytestmark = pytest.mark.ray


def _base(tiny_shards, storage) -> dict:
    return tiny_config("vae", data={"shards": tiny_shards, "batch_size": 16, "max_rows": 32},
                       train={"epochs": 2, "num_workers": 2, "cpus_per_worker": 0.25, "name": "tiny",
                              "storage_path": str(storage)}).to_dict()


def _spec(tmp_path, base, body):
    path = tmp_path / "space.tune.yaml"
    path.write_text(yaml.safe_dump(body))
    from facegen.config import from_dict

    return read_search_spec(str(path), from_dict(base), base)


def test_search_exports_the_best_trial_and_restores(ray_session, tiny_shards, tmp_path):
    base = _base(tiny_shards, tmp_path / "runs")
    spec = _spec(tmp_path, base, {"metric": {"val/recon_mse": 1.0, "val/kl": 0.001}, "mode": "min",
                                  "space": {"train.lr": {"choice": [1e-3, 3e-3]}}})
    results, path = run_search(base, spec, num_samples=2)
    assert len(results) == 2 and not results.errors
    summary = export_best(results, spec, base, f"{path}/best_bundle")
    best = min(results, key=lambda r: r.metrics["objective"])
    assert summary["value"] == pytest.approx(best.metrics["objective"])
    bundle = load_bundle(summary["bundle"])
    assert bundle.config.train.lr == best.config["train.lr"]
    # The objective really is the configured weighted sum of the reported metrics.
    assert best.metrics["objective"] == pytest.approx(best.metrics["val/recon_mse"] + 0.001 * best.metrics["val/kl"])

    parent, children = search_runs(base, path)
    assert parent.info.run_name == "tiny-search" and parent.data.params["search.metric"]
    assert sorted(c.data.params["train.lr"] for c in children) == sorted(str(r.config["train.lr"]) for r in results)
    client = tracking_client(base)
    for result in results:  # a child run is named after its trial, whose folder name starts with that name
        (child,) = [c for c in children if os.path.basename(result.path).startswith(c.info.run_name + "_")]
        history = client.get_metric_history(child.info.run_id, "objective")  # one point per epoch reported
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, len(history) + 1))
        assert len(history) == result.metrics["training_iteration"]
    assert "best_bundle/meta.json" in {a.path for a in client.list_artifacts(parent.info.run_id, "best_bundle")}

    restored, _ = run_search(base, spec, num_samples=2, resume=True)
    assert sorted(r.metrics["objective"] for r in restored) == sorted(r.metrics["objective"] for r in results)
    again, children_again = search_runs(base, path)  # the resumed search reopens its run, adds no trial run
    assert again.info.run_id == parent.info.run_id and len(children_again) == 2


def tracking_client(base):
    from mlflow import MlflowClient

    from facegen.config import from_dict
    from facegen.training.tracking import store_uri

    return MlflowClient(store_uri(from_dict(base)))


def search_runs(base, path):
    """The search's MLflow run and its child runs (one per trial)."""
    from facegen.training.tracking import EXPERIMENT, RUN_TAG

    client = tracking_client(base)
    exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (parent,) = client.search_runs([exp], filter_string=f"tags.`{RUN_TAG}` = '{path}'")
    children = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, children


@pytest.mark.parametrize("body, message", [
    ({"space": {"train.lrr": {"choice": [0.1]}}}, "train.lrr: unknown key"),
    ({"space": {"train.lr": {"gaussian": [0, 1]}}}, "space.train.lr: expected one of"),
    ({"space": {}}, "`space` must map"),
    ({"space": {"model.beta": {"choice": ["high"]}}}, "model.beta: expected float"),
    ({"mode": "up", "space": {"train.lr": {"choice": [0.1]}}}, "mode must be min or max"),
    ({"grace_period": 3, "space": {"train.lr": {"choice": [0.1]}}}, "grace_period 3 exceeds train.epochs=1"),
    ({"grace_period": 0, "space": {"train.lr": {"choice": [0.1]}}}, "grace_period must be a whole number"),
])
def test_bad_search_spaces_fail_with_one_line(tmp_path, body, message):
    base = tiny_config("vae").to_dict()
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        _spec(tmp_path, apply_overrides(base, {}), body)
