"""How the weights move: the optimizer (AdamW), the learning-rate schedule and the numeric precision.

Allowed precisions and schedules are listed in lakd.choices (config.validate checks them there).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from lakd.choices import LR_SCHEDULES, PRECISIONS
from lakd.config import OptimConfig


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA GPUs that support it, else fp32. Explicit values are checked against the device."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"optim.precision must be auto, {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("optim.precision=fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("optim.precision=bf16 but this GPU has no bf16 support (use fp16 or fp32)")
    return precision


def autocast_context(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str = "cosine") -> Callable[[int], float]:
    """Linear warmup from ~0 to 1, then cosine (or linear) decay to 0 at `total_steps`."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress

    return f


def build_optimizer(params: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; biases and norm/1-D parameters get no weight decay."""
    decay, no_decay = [], []
    for name, p in params:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("nothing to train: no parameter requires grad")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, schedule: str):
    """`lr_lambda` as a torch LambdaLR, stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, warmup_steps, schedule))
