"""What only a GPU exercises: bf16 autocast steps without host syncs, and Ray Train's NCCL backend.

Marked ``cuda``: ``bench/gpu.sh`` runs them (``pytest -m cuda``) on a GPU machine. Without a GPU they skip,
unless ``FACEGEN_CUDA_TESTS_ON_CPU=1`` (what ``bench/gpu.sh --cpu`` sets): then the same bodies run on CPU
(bf16 autocast off, gloo instead of NCCL), so a mistake in them shows before a GPU is at hand.
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch

from facegen.data.pipeline import read_examples
from facegen.data.shards import read_manifest
from facegen.pretrained import build_for_training
from facegen.training.loop import step_autocast, make_optimizers, train_one_epoch
from tests.tiny import tiny_config

pytestmark = pytest.mark.cuda


@pytest.fixture
def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("FACEGEN_CUDA_TESTS_ON_CPU") == "1":
        return torch.device("cpu")
    pytest.skip("needs a GPU (FACEGEN_CUDA_TESTS_ON_CPU=1 runs it on CPU)")


@pytest.mark.parametrize("family", ["vae", "infogan", "cvae", "began"])
def test_bf16_steps_train_every_player_without_waiting_for_the_device(family, device, tiny_shards):
    cfg = tiny_config(family, data={"shards": tiny_shards})
    torch.manual_seed(0)
    model = build_for_training(cfg.model).to(device)
    optimizers = make_optimizers(model, cfg)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    examples = read_examples(read_manifest(tiny_shards), "train", 8)
    batches = [{**examples, "corrupt_rows": torch.tensor(0)} for _ in range(3)]
    dtypes: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")  # any op that makes the host wait for the GPU warns
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            means, seen, corrupt = train_one_epoch(model, model, optimizers, iter(batches), device,
                                                   step_autocast(cfg, device))
    finally:
        hook.remove()
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert not syncs, f"host syncs on the step path: {syncs[:3]}"
    metrics = means.reduce()
    assert seen == 3 * 8 and corrupt == 0
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    assert set(dtypes) == {torch.bfloat16 if device.type == "cuda" else torch.float32}
    moved = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert moved, "no weight moved"


@pytest.mark.ray
def test_ray_train_runs_one_gpu_worker_over_nccl(device, ray_session, tiny_shards, tmp_path):
    from facegen.bundle import load_bundle
    from facegen.training.trainer import fit

    cfg = tiny_config("vae", data={"shards": tiny_shards, "batch_size": 16, "max_rows": 32},
                      train={"num_workers": 1, "epochs": 2, "use_gpu": device.type == "cuda",
                             "name": "nccl", "storage_path": str(tmp_path)})
    result = fit(cfg)  # Ray Train picks NCCL for GPU workers (gloo on CPU); metrics are gathered over it
    assert [m["epoch"] for m in result.history] == [1, 2]
    assert all(math.isfinite(m["train/loss"]) and 0.0 <= m["train/data_wait_frac"] <= 1.0 for m in result.history)
    assert load_bundle(result.bundle).model is not None
