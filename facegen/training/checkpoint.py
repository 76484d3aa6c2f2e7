"""Training state on disk: one ``state.pt`` per checkpoint, loadable with ``weights_only=True``.

state.pt holds::

    model       the unwrapped model's state_dict
    optimizers  {player: optimizer state_dict}
    epoch       epochs completed
    history     [{"epoch": e, "train/loss": ..., "val/...": ...}, ...]  (loss curves survive a resume)
    config      the resolved experiment config (plain dict), so a checkpoint rebuilds its model alone
    starts      the epoch each (re)start of the run began at: [0] for one clean run, [0, 3] after a
                restart from the checkpoint of epoch 3
    best_epoch  the epoch with the best ``train.monitor`` so far (1-based; 0 before the first)
    best_model  that epoch's weights, kept only when early stopping is on (the bundle exports them)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from facegen.io import atomic_path

STATE_FILE = "state.pt"


@dataclass
class TrainingState:
    model: dict[str, torch.Tensor]
    optimizers: dict[str, dict[str, Any]]
    epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] | None = None


def save_state(state: TrainingState, folder: str) -> str:
    """Write ``state`` into ``folder`` (temp name, then rename, so a crash never leaves half a file)."""
    path = os.path.join(folder, STATE_FILE)
    with atomic_path(path) as tmp:
        torch.save(vars(state), tmp)
    return path


def load_state(folder: str, map_location: str | torch.device = "cpu") -> TrainingState:
    raw = torch.load(os.path.join(folder, STATE_FILE), map_location=map_location, weights_only=True)
    return TrainingState(**raw)
