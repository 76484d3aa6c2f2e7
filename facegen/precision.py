"""bf16 autocast where the hardware does bf16 natively: one test for training steps and guided edits alike."""

from __future__ import annotations

import contextlib

import torch


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (oneDNN's own test: AVX512-BF16 or AMX)."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe and probe())


def bf16_autocast(device: torch.device | str, *, cuda: bool = True, cpu: bool = True):
    """bf16 autocast on ``device`` when asked for that kind of device (``cuda`` / ``cpu``) and the device does bf16
    natively; a no-op context otherwise (emulated bf16 on an older CPU is slower than fp32). bf16 needs no loss
    scaling; weights stay fp32."""
    kind = torch.device(device).type
    if kind == "cuda" and cuda and torch.cuda.is_bf16_supported(including_emulation=False):  # Ampere or later
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if kind == "cpu" and cpu and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
