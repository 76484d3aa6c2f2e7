"""The worker's hot path without Ray: threads from the CPUs a worker is given, metrics summed where they live
and read once per epoch, and the time spent waiting for data (bench/train_overhead.py measures the gains)."""

from __future__ import annotations

import contextlib
import time

import pytest
import torch

from facegen.errors import ConfigError
from facegen.metrics import MetricMeans
from facegen.models import build_model
from facegen.precision import cpu_has_bf16
from facegen.training.loop import (DataWait, compiled_step, make_optimizers, step_autocast, train_one_epoch,
                                   worker_threads)
from tests.tiny import tiny_config


@pytest.mark.parametrize("cpus, cores, expected", [(0.5, 2, 1), (1.0, 2, 1), (1.5, 2, 2), (2.0, 2, 2),
                                                    (4.0, 2, 2), (3.0, 16, 3)])
def test_threads_follow_the_cpus_a_worker_is_given(cpus, cores, expected):
    assert worker_threads(tiny_config("ae", train={"cpus_per_worker": cpus}), cores=cores) == expected


def test_an_explicit_thread_count_wins():
    assert worker_threads(tiny_config("ae", train={"cpus_per_worker": 0.5, "torch_threads": 3}), cores=2) == 3


def test_tensor_metrics_reduce_to_the_same_weighted_means_as_floats():
    steps = [({"loss": 2.0, "acc": 0.5}, 8), ({"loss": 1.0, "acc": 1.0}, 4), ({"loss": 4.0}, 4)]
    floats, tensors = MetricMeans(), MetricMeans()
    for metrics, n in steps:
        floats.add(metrics, n)
        tensors.add({k: torch.tensor(v, dtype=torch.float32) for k, v in metrics.items()}, n)
    expected = {"loss": (16 + 4 + 16) / 16, "acc": (4 + 4) / 12}
    assert floats.reduce() == pytest.approx(expected)
    assert tensors.reduce() == pytest.approx(expected)
    assert all(isinstance(v, float) for v in tensors.reduce().values())


def test_data_wait_counts_the_time_spent_in_next_and_passes_every_batch_through():
    def slow(n):
        for i in range(n):
            time.sleep(0.02)  # a lower bound: sleep never returns early
            yield i

    wait = DataWait()
    assert list(wait.wrap(slow(3))) == [0, 1, 2]
    assert wait.waited >= 3 * 0.02
    quick = DataWait()
    assert list(quick.wrap([])) == [] and quick.waited >= 0.0


@pytest.mark.parametrize("amp_cpu", [False, True])
def test_cpu_bf16_only_when_asked_and_the_cpu_has_it(amp_cpu):
    cfg = tiny_config("vae", train={"amp_cpu": amp_cpu})
    conv = torch.nn.Conv2d(3, 4, 3)
    with step_autocast(cfg, torch.device("cpu")):
        dtype = conv(torch.rand(1, 3, 8, 8)).dtype
    # Emulated bf16 is slower than fp32, so a CPU without it keeps fp32 even when asked.
    assert dtype == (torch.bfloat16 if amp_cpu and cpu_has_bf16() else torch.float32)


def test_a_compiled_step_trains_the_same_weights_and_leaves_the_state_dict_plain():
    cfg = tiny_config("vae", train={"compile": "eager-backend"})
    batch = {"image": torch.rand(4, 3, 32, 32) * 2 - 1, "attrs": torch.zeros(4, 40), "corrupt_rows": torch.tensor(0)}
    trained = []
    for mode in ("off", cfg.train.compile):
        torch.manual_seed(0)
        model = build_model(cfg.model)
        stepped = compiled_step(model, mode)
        torch.manual_seed(1)  # the same noise in both steps
        train_one_epoch(stepped, model, make_optimizers(model, cfg), [dict(batch), dict(batch)],
                        torch.device("cpu"), contextlib.nullcontext())
        trained.append(model.state_dict())
    assert trained[0].keys() == trained[1].keys()  # no "_orig_mod." prefix reaches a checkpoint
    for name, weights in trained[0].items():
        assert torch.allclose(weights, trained[1][name], atol=1e-5), name
    torch.manual_seed(0)
    initial = build_model(cfg.model).state_dict()
    assert any(not torch.equal(initial[name], weights) for name, weights in trained[1].items())  # it did train

def test_an_unknown_compile_mode_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"train.compile: must be one of off, default, reduce-overhead"):
        tiny_config("vae", train={"compile": "fast"})
