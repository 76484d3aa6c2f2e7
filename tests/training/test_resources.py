"""A job asking for more than the cluster has fails before it starts, with one line naming the resource."""

from __future__ import annotations

import pytest

from facegen.errors import FacegenError
from facegen.runtime import require_resources
from facegen.training.resources import train_demand, trial_demand
from facegen.training.search_space import max_concurrent
from facegen.training.tune import run_search
from facegen.training.search_space import SearchSpec
from tests.tiny import tiny_config


def test_demands_leave_ray_data_its_cpu():
    cfg = tiny_config("vae", train={"num_workers": 2, "cpus_per_worker": 0.75})
    assert train_demand(cfg).total() == {"CPU": 2.0}  # 2 x 0.75 + 0.5 for the reads: a 2-CPU node, exactly
    assert trial_demand(cfg).total() == pytest.approx({"CPU": 2.1})
    small = tiny_config("vae", train={"num_workers": 2, "cpus_per_worker": 0.25})
    assert max_concurrent(small, {"CPU": 4.0}) == 3  # 3 x (0.5 + 0.1 + 0.5) <= 4 < 4 x 1.1


@pytest.mark.ray
def test_too_big_for_the_cluster_is_one_line(ray_session, tiny_shards, tmp_path):
    cfg = tiny_config("vae", train={"num_workers": 8, "cpus_per_worker": 1})
    with pytest.raises(FacegenError) as info:
        require_resources(train_demand(cfg))
    assert str(info.value).startswith("train: needs 8.5 CPU (train.num_workers=8 x train.cpus_per_worker=1 + 0.5 "
                                      "for Ray Data's reads) but the cluster has 4;")
    gpu = tiny_config("vae", train={"use_gpu": True, "gpus_per_worker": 0.5})
    with pytest.raises(FacegenError, match=r"^train: needs 0\.5 GPU \(train\.num_workers=1 x "
                                           r"train\.gpus_per_worker=0\.5\) but the cluster has 0;"):
        require_resources(train_demand(gpu))

    base = tiny_config("vae", data={"shards": tiny_shards}, train={"num_workers": 4, "cpus_per_worker": 1,
                                                                   "storage_path": str(tmp_path)}).to_dict()
    spec = SearchSpec(metric="val/loss", mode="min", grace_period=1, space={"train.lr": {"choice": [0.1]}})
    with pytest.raises(FacegenError, match=r"^tune: needs 4\.6 CPU .* \+ 0\.1 for the trial's driver \+ 0\.5"):
        run_search(base, spec, num_samples=1)
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
