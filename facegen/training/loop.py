"""The one training loop: every family, every player, DDP via Ray Train, checkpoint every epoch.

``train_loop_per_worker`` runs on each Ray Train worker. It knows nothing about any family: for every batch
it steps each of ``model.players`` in order (one optimizer each), so an AE and a GAN share this code.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any

import torch

from facegen.config import ExperimentConfig, from_dict
from facegen.data.pipeline import TrainCollate, shuffle_seed
from facegen.images import uint8_to_float
from facegen.models import FaceModel
from facegen.precision import bf16_autocast
from facegen.pretrained import build_for_training
from facegen.training.checkpoint import TrainingState, load_state, save_state
from facegen.metrics import MetricMeans, parameter_spread, sum_across_workers


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of a worker's randomness in one epoch (VAE noise, GAN latents): resumable, distinct per rank."""
    return seed * 1_000_003 + epoch * 1009 + rank


def make_optimizers(model: FaceModel, cfg: ExperimentConfig) -> dict[str, torch.optim.Optimizer]:
    optimizers = {}
    for player in model.players:
        settings = model.optimizer_settings(player, cfg.train.lr, cfg.train.betas, cfg.train.weight_decay)
        params = list(model.parameters_for(player))
        # On a GPU one fused kernel updates every tensor: a small model's step is bound by kernel launches.
        fused = bool(params) and all(p.is_cuda for p in params)
        optimizers[player] = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas,
                                               weight_decay=settings.weight_decay, fused=fused or None)
    return optimizers


def set_epoch_lr(optimizers: dict[str, torch.optim.Optimizer], cfg: ExperimentConfig, epoch: int) -> None:
    """Every param group's learning rate for ``epoch``: its own initial value times ``cfg.train.lr_factor``."""
    factor = cfg.train.lr_factor(epoch)
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor  # kept in checkpoints


def worker_threads(cfg: ExperimentConfig, cores: int | None = None) -> int:
    """Intra-op threads of one worker: ``train.torch_threads`` if set, else one per CPU Ray gives the worker
    (``cpus_per_worker`` rounded up), never more than the node's cores. A fixed 1 halved a 1-worker run
    given both cores of a 2-core machine (bench/train_overhead.py)."""
    if cfg.train.torch_threads:
        return cfg.train.torch_threads
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(math.ceil(cfg.train.cpus_per_worker), cores or 1))


def compiled_step(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``module`` as the training step calls it under ``train.compile``: itself when ``off``, else through
    ``torch.compile`` (``eager-backend``: Dynamo's tracing without code generation, which needs no compiler).
    The state dict stays the uncompiled model's: checkpoints and bundles never see the wrapper."""
    if mode == "off":
        return module
    if mode == "eager-backend":
        return torch.compile(module, backend="eager")
    return torch.compile(module, mode=mode)


class DataWait:
    """Wraps a batch iterator and adds up the seconds spent waiting in ``next``: how long the step loop
    stood idle for want of data (``train/data_wait_frac`` = waited / the epoch's training time)."""

    def __init__(self) -> None:
        self.waited = 0.0

    def wrap(self, batches):
        iterator = iter(batches)
        while True:
            started = time.perf_counter()
            batch = next(iterator, None)
            self.waited += time.perf_counter() - started
            if batch is None:
                return
            yield batch


def step_autocast(cfg: ExperimentConfig, device: torch.device):
    # weights, gradients and optimizer state stay fp32.
    return bf16_autocast(device, cuda=cfg.train.amp, cpu=cfg.train.amp_cpu)


def _batches(shard, cfg: ExperimentConfig, epoch: int, *, train: bool, per_worker: int, device: torch.device):
    # Ray collates in a pool of prefetch_batches threads and, on a GPU, moves each batch to the device there
    # (pinned pages make that copy asynchronous): one batch ahead per CPU the worker has, at least two, keeps
    # the step loop fed without the collate threads crowding its own (train/data_wait_frac says if not).
    return shard.iter_torch_batches(
        batch_size=per_worker,
        # On a GPU the pixels cross as uint8 and become floats there (to_device): 4x fewer bytes to pin and copy,
        # and no float conversion on the host, which fed an H200 too slowly (bench/gpu.sh, README).
        collate_fn=TrainCollate(seed=cfg.train.seed, epoch=epoch, hflip=train and cfg.data.hflip,
                                pixels=device.type == "cuda"),
        drop_last=train,  # equal batches on every rank keep DDP's collectives in step
        local_shuffle_buffer_size=(cfg.data.shuffle_buffer or None) if train else None,
        local_shuffle_seed=shuffle_seed(cfg.train.seed, epoch) if train else None,
        prefetch_batches=max(2, worker_threads(cfg)),
        pin_memory=device.type == "cuda",
    )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch on ``device``, uint8 pixels (``TrainCollate(pixels=True)``) as floats in [-1, 1]."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if batch["image"].dtype == torch.uint8:
        batch["image"] = uint8_to_float(batch["image"])
    return batch


def train_one_epoch(ddp_model, model: FaceModel, optimizers, batches, device, autocast):
    """Steps every player on every batch; returns (metric means object, images seen, corrupt rows).

    Nothing here waits for the device: metrics and the corrupt count stay tensors until the epoch ends, so
    a GPU runs as far ahead of the host as its queue allows."""
    model.train()
    means, seen, corrupt = MetricMeans(), 0, 0
    for batch in batches:
        corrupt = corrupt + batch.pop("corrupt_rows")  # a tensor wherever Ray put the batch: no int() per step
        batch = to_device(batch, device)
        n = batch["image"].shape[0]
        for player in model.players:
            # Clear every player's grads: a generator step leaves grads on the discriminator, and only the
            # player being stepped may move.
            model.zero_grad(set_to_none=True)
            with autocast:
                out = ddp_model(batch, player=player)
            out.loss.backward()
            optimizers[player].step()
            model.after_step(player)
            means.add(out.metrics, n)
        seen += n
    return means, seen, int(corrupt)


@torch.no_grad()
def evaluate(model: FaceModel, batches, device, autocast) -> MetricMeans:
    model.eval()
    means = MetricMeans()
    for batch in batches:
        batch.pop("corrupt_rows")
        batch = to_device(batch, device)
        with autocast:
            metrics = model.validation_step(batch)
        means.add(metrics, batch["image"].shape[0])
    return means


def is_better(cfg: ExperimentConfig, score: float, history: list[dict[str, float]], best_epoch: int) -> bool:
    """Whether ``score`` beats the monitored metric of ``best_epoch`` (always true before any best)."""
    if best_epoch == 0:
        return True
    best = history[best_epoch - 1][cfg.train.monitor]
    return score < best if cfg.train.monitor_mode == "min" else score > best


def _restore(model: FaceModel, optimizers, checkpoint) -> TrainingState | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        state = load_state(folder)
    model.load_state_dict(state.model)
    for player, optimizer in optimizers.items():
        optimizer.load_state_dict(state.optimizers[player])
    return state


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. ``loop_config``: {"config": resolved config dict}. It prints nothing: the driver
    prints each epoch's line from the metrics reported here (``facegen.training.progress``)."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(worker_threads(cfg))
    device = ray.train.torch.get_device()

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank (DDP also broadcasts them)
    model = build_for_training(cfg.model).to(device)
    optimizers = make_optimizers(model, cfg)
    state = _restore(model, optimizers, ray.train.get_checkpoint())
    start_epoch, history = (state.epoch, state.history) if state else (0, [])
    starts = (state.starts if state else []) + [start_epoch]
    best_epoch, best_model = (state.best_epoch, state.best_model) if state else (0, None)
    ddp_model = ray.train.torch.prepare_model(
        model, move_to_device=False,
        # Multi-player models leave the other player's parameters out of some steps.
        parallel_strategy_kwargs={"find_unused_parameters": len(model.players) > 1})
    stepped = compiled_step(ddp_model, cfg.train.compile)

    per_worker = cfg.data.batch_size // world
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    autocast = step_autocast(cfg, device)
    for epoch in range(start_epoch, cfg.train.epochs):
        torch.manual_seed(epoch_seed(cfg.train.seed, epoch, rank))
        model.set_epoch(epoch)
        set_epoch_lr(optimizers, cfg, epoch)
        started, wait = time.perf_counter(), DataWait()
        means, seen, corrupt = train_one_epoch(
            stepped, model, optimizers,
            wait.wrap(_batches(train_shard, cfg, epoch, train=True, per_worker=per_worker, device=device)),
            device, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the epoch ends when its queued kernels have run
        train_seconds = time.perf_counter() - started
        val = evaluate(model, _batches(val_shard, cfg, epoch, train=False, per_worker=per_worker, device=device),
                       device, autocast)
        metrics: dict[str, float] = {"epoch": epoch + 1}
        metrics.update({f"train/{k}": v for k, v in means.reduce().items()})
        metrics.update({f"val/{k}": v for k, v in model.summarize_metrics(val.reduce()).items()})
        metrics["train/images_per_s"] = sum_across_workers(seen) / max(train_seconds, 1e-9)
        metrics["train/corrupt_rows"] = sum_across_workers(corrupt)
        # The mean over workers of the share of the epoch each spent waiting for its next batch.
        metrics["train/data_wait_frac"] = sum_across_workers(wait.waited / max(train_seconds, 1e-9)) / world
        metrics["sync/param_spread"] = parameter_spread(model)
        history.append(metrics)
        if cfg.train.monitor not in metrics:
            if cfg.train.early_stopping_patience:  # without the monitored metric early stopping is meaningless
                raise ValueError(f"train.monitor: {cfg.train.monitor!r} is not reported (have: {sorted(metrics)})")
            best_epoch = epoch + 1  # nothing to rank by: the latest epoch counts as the best
        elif is_better(cfg, metrics[cfg.train.monitor], history, best_epoch):
            best_epoch = epoch + 1
            if cfg.train.early_stopping_patience:
                best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        stop = bool(cfg.train.early_stopping_patience) and epoch + 1 - best_epoch >= cfg.train.early_stopping_patience
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:  # one copy of the replicated state is enough
                save_state(TrainingState(model.state_dict(), {p: o.state_dict() for p, o in optimizers.items()},
                                         epoch + 1, history, loop_config["config"], starts, best_epoch,
                                         best_model), folder)
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=checkpoint)
        if stop:  # every rank sees the same all-reduced metrics, so all stop together
            break
