"""How the weights move: the optimizer (AdamW), the learning-rate schedule and the numeric precision.

Allowed precisions and schedules are listed in lakd.choices (config.validate checks them there).
"""

from __future__ import annotations

import contextlib
import math
import re
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


_ENCODER_LAYER = re.compile(r"(?:^|\.)backbone\.encoder\.layers\.(\d+)\.")
_BACKBONE = re.compile(r"(?:^|\.)backbone\.")


def layer_depth(name: str, num_layers: int) -> int:
    """How far below the top a parameter sits: 0 for everything above the backbone (pooling, language
    embedding, head), L - i for transformer layer i of L, L + 1 for the rest of the backbone (CNN feature
    encoder, projection, positional convolution)."""
    m = _ENCODER_LAYER.search(name)
    if m:
        return num_layers - int(m.group(1))
    return num_layers + 1 if _BACKBONE.search(name) else 0


def build_optimizer(params: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; biases and norm/1-D parameters get no weight decay.

    `cfg.layer_lr_decay` < 1 gives each parameter the learning rate lr x decay^depth (`layer_depth`): the
    layer-wise decay used to fine-tune pretrained wav2vec2/BERT-style encoders, whose lower layers hold general
    features that large updates would destroy. At 1 (default) there are just the two weight-decay groups.
    """
    params = [(name, p) for name, p in params if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires grad")
    decay_rate = cfg.layer_lr_decay
    layers = [int(m.group(1)) for name, _ in params if (m := _ENCODER_LAYER.search(name))]
    num_layers = max(layers) + 1 if layers else 0
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, p in params:
        depth = layer_depth(name, num_layers) if decay_rate != 1.0 else 0
        decays = not (p.ndim <= 1 or name.endswith(".bias"))
        groups.setdefault((depth, decays), []).append(p)
    ordered = sorted(groups, key=lambda k: (k[0], not k[1]))  # depth 0 first, weight-decayed before not
    return torch.optim.AdamW(
        [
            {"params": groups[k], "weight_decay": cfg.weight_decay if k[1] else 0.0, "lr": cfg.lr * decay_rate ** k[0]}
            for k in ordered
        ],
        lr=cfg.lr,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, schedule: str):
    """`lr_lambda` as a torch LambdaLR, stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, warmup_steps, schedule))
