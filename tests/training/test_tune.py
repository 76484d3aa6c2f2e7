"""A tiny ASHA search end to end: two multi-worker Train trials, the best one exported, then restored."""

from __future__ import annotations

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

    restored, _ = run_search(base, spec, num_samples=2, resume=True)
    assert sorted(r.metrics["objective"] for r in restored) == sorted(r.metrics["objective"] for r in results)


@pytest.mark.parametrize("body, message", [
    ({"space": {"train.lrr": {"choice": [0.1]}}}, "train.lrr: unknown key"),
    ({"space": {"train.lr": {"gaussian": [0, 1]}}}, "space.train.lr: expected one of"),
    ({"space": {}}, "`space` must map"),
    ({"space": {"model.beta": {"choice": ["high"]}}}, "model.beta: expected float"),
    ({"mode": "up", "space": {"train.lr": {"choice": [0.1]}}}, "mode must be min or max"),
])
def test_bad_search_spaces_fail_with_one_line(tmp_path, body, message):
    base = tiny_config("vae").to_dict()
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        _spec(tmp_path, apply_overrides(base, {}), body)
