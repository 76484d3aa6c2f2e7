"""Epoch metrics: batch-size-weighted means on each worker, combined across workers once per epoch."""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist


class MetricMeans:
    """Accumulates ``{name: scalar}`` per batch, weighted by batch size; ``reduce`` gives global means."""

    def __init__(self) -> None:
        self._sums: dict[str, float | torch.Tensor] = defaultdict(float)
        self._weights: dict[str, float] = defaultdict(float)

    def add(self, metrics: dict[str, torch.Tensor | float], weight: int) -> None:
        for name, value in metrics.items():
            if isinstance(value, torch.Tensor):
                # Summed where it lives: float(value) here would make the host wait for a GPU every step.
                value = value.detach().to(torch.float32 if value.device.type == "mps" else torch.float64)
            self._sums[name] = self._sums[name] + value * weight
            self._weights[name] += weight

    def _host_sums(self) -> dict[str, float]:
        """The sums as Python floats, with one device-to-host copy for all the tensor sums."""
        tensors = {name: v.reshape(()) for name, v in self._sums.items() if isinstance(v, torch.Tensor)}
        out = {name: float(v) for name, v in self._sums.items() if name not in tensors}
        if tensors:
            device = next(iter(tensors.values())).device
            out.update(zip(tensors, torch.stack([v.to(device) for v in tensors.values()]).tolist()))
        return out

    def reduce(self) -> dict[str, float]:
        """Means over every worker's batches. A collective: every rank must call it."""
        host = self._host_sums()
        local = {name: (host[name], self._weights[name]) for name in host}
        gathered = all_gather_objects(local)
        sums: dict[str, float] = defaultdict(float)
        weights: dict[str, float] = defaultdict(float)
        for part in gathered:
            for name, (s, w) in part.items():
                sums[name] += s
                weights[name] += w
        return {name: sums[name] / weights[name] for name in sorted(sums) if weights[name] > 0}


def all_gather_objects(obj):
    """Every rank's ``obj`` as a list (just ``[obj]`` without a process group).

    Object gathering (not tensor all-reduce) keeps ranks safe when their metric names differ, e.g. a rank
    whose every row was corrupt.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_across_workers(value: float) -> float:
    return float(sum(all_gather_objects(value)))


@torch.no_grad()
def parameter_spread(model: torch.nn.Module) -> float:
    """Largest difference across workers of any parameter tensor's float64 sum; 0.0 when DDP keeps replicas
    identical. Reported every epoch as ``sync/param_spread``, it catches silent replica divergence."""
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
    per_rank = torch.stack(all_gather_objects(sums))
    return float((per_rank.max(0).values - per_rank.min(0).values).abs().max())
