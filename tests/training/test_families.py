"""Every registered family through the real harness: a Ray Train run of two optimizer steps, its checkpoint
restored the way a resumed worker restores it, and its exported bundle reloaded with identical outputs.

The runs are independent, so they go concurrently from threads (``fit`` supports that): most of a tiny run
is Ray Train start-up latency, which overlaps well even on two cores.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from facegen.bundle import load_bundle
from facegen.models import MODELS, build_model
from facegen.training.loop import _restore, make_optimizers
from facegen.training.trainer import fit
from tests.tiny import tiny_config

pytestmark = pytest.mark.ray
FAMILIES = sorted(MODELS)
# and a family whose option adds a player (the patch critic), and a multi-player family whose DDP step goes
# through Dynamo (train.compile; the eager backend generates no code, so no compiler is needed)
COMPILED = "infogan+compiled"
RUNS = FAMILIES + ["vae+adversarial", COMPILED]
FAIRFACE_FAMILIES = {"fairface"}  # need race/age/gender labels


@pytest.fixture(scope="module")
def family_runs(ray_session, tiny_shards, tiny_fairface_shards, tmp_path_factory):
    storage = tmp_path_factory.mktemp("family-runs")

    def train(run):
        family, compiled = ("infogan", {"compile": "eager-backend"}) if run == COMPILED else (run, {})
        shards = tiny_fairface_shards if family in FAIRFACE_FAMILIES else tiny_shards
        cfg = tiny_config(family, data={"shards": shards, "batch_size": 8, "max_rows": 16},
                          # Tracking is tested in test_harness; off here, it saves each run ~3 s of CPU.
                          train={"name": run.replace("+", "-"), "storage_path": str(storage), "cpus_per_worker": 0.25,
                                 "tracking": False, **compiled})
        return cfg, fit(cfg)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(RUNS, pool.map(train, RUNS)))


@pytest.mark.parametrize("family", RUNS)
def test_family_trains_checkpoints_resumes_and_exports(family, family_runs):
    from ray.train import Checkpoint

    cfg, result = family_runs[family]
    assert result.history[-1]["epoch"] == 1
    assert result.tracking_uri is None and not (Path(result.bundle).parents[1] / "mlflow.db").exists()
    assert all(torch.isfinite(torch.tensor(v)) for k, v in result.history[-1].items() if k.startswith("train/"))

    # Resume: a fresh model and optimizers restored from the run's checkpoint, as a restarted worker does.
    model = build_model(cfg.model)
    optimizers = make_optimizers(model, cfg)
    state = _restore(model, optimizers, Checkpoint(result.checkpoint_path))
    assert state.epoch == 1
    for player, optimizer in optimizers.items():  # two Adam steps recorded per player
        steps = [s["step"] for s in optimizer.state_dict()["state"].values()]
        assert steps and all(int(s) == 2 for s in steps), player

    bundle = load_bundle(result.bundle)
    model.eval()
    for name, value in bundle.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
    batch = {"image": torch.rand(4, 3, 32, 32) * 2 - 1, "attrs": torch.ones(4, 40),
             **{k: torch.zeros(4, dtype=torch.long) for k in ("race", "age", "gender", "label")}}
    outputs = []
    for candidate in (model, bundle.model):
        torch.manual_seed(0)  # the same noise for families that sample (VAE, GANs)
        outputs.append(candidate.validation_step(batch))
    assert outputs[0].keys() == outputs[1].keys()
    for key in outputs[0]:
        assert torch.equal(outputs[0][key], outputs[1][key]), key
