"""The two ways a step is taken, behind one protocol: plain torch (+ DDP) and DeepSpeed.

The trainer's loop is the same for both; it calls only what `TrainingBackend` declares. `build_backend`
picks one: `PlainBackend` here, `DeepSpeedBackend` in lakd.train.deepspeed_engine (imported only then).
Both train a `ModelWithExtras`, so state dicts look the same whichever backend (and however many
processes) wrote them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn

from lakd.config import OptimConfig
from lakd.train.distributed import DistInfo
from lakd.train.optim import build_optimizer, build_scheduler


class TrainingBackend(Protocol):
    """What the training loop needs from a backend."""

    forward_model: nn.Module  # what the loss function calls (the module, or its DDP / DeepSpeed wrapper)

    def no_sync(self, last_in_window: bool) -> contextlib.AbstractContextManager: ...

    def backward(self, loss: torch.Tensor, window: int) -> None: ...

    def optimizer_step(self) -> tuple[float | None, bool]:
        """(grad norm before clipping or None, whether the step was applied)."""
        ...

    def lr(self) -> float: ...

    def state_dict(self) -> dict:
        """What goes into trainer_state.pt (the plain backend: module, optimizer, scheduler, scaler)."""
        ...

    def load_state_dict(self, state: dict) -> None: ...

    def save(self, directory: Path) -> None:
        """Files of its own beside trainer_state.pt (DeepSpeed: every rank's partition). Collective."""
        ...

    def load(self, directory: Path) -> None: ...


class ModelWithExtras(nn.Module):
    """One module holding the model and the extra trainable modules, so DDP/DeepSpeed sync and save them all.
    Forward is the model's; the loss function reaches the extras through its own references."""

    def __init__(self, model: nn.Module, extras: Mapping[str, nn.Module]):
        super().__init__()
        self.model = model
        self.extras = nn.ModuleDict(dict(extras))

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


class PlainBackend:
    """torch (+ DDP when several processes): autocast, GradScaler for fp16, clipping, AdamW, LambdaLR."""

    def __init__(
        self,
        module: nn.Module,
        optimizer,
        scheduler,
        precision: str,
        device: torch.device,
        grad_clip: float,
        ddp: bool,
        find_unused_parameters: bool,
    ):
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.grad_clip = grad_clip
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.params = [p for p in module.parameters() if p.requires_grad]
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.forward_model = DDP(module, device_ids=ids, find_unused_parameters=find_unused_parameters)
        else:
            self.forward_model = module
        self.ddp = ddp

    def no_sync(self, last_in_window: bool):
        if self.ddp and not last_in_window:
            return self.forward_model.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, window: int) -> None:
        scaled = loss / window
        if self.scaler is not None:
            scaled = self.scaler.scale(scaled)
        scaled.backward()

    def optimizer_step(self) -> tuple[float | None, bool]:
        """Clip and step; returns (grad norm before clipping, whether the step was applied)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip if self.grad_clip and self.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        applied = True
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            applied = self.scaler.get_scale() >= scale  # a lowered scale means inf grads, step skipped
        elif math.isfinite(norm):
            self.optimizer.step()
        else:
            applied = False
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return norm, applied

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def save(self, directory: Path) -> None:
        pass  # everything is in state_dict()

    def load(self, directory: Path) -> None:
        pass


def build_backend(
    module: ModelWithExtras,
    optim_cfg: OptimConfig,
    *,
    dist: DistInfo,
    precision: str,
    total_steps: int,
    warmup_steps: int,
    schedule: str,
    use_deepspeed: bool = False,
    zero_stage: int = 0,
    micro_batch_size: int | None = None,
    log_every: int = 10,
    find_unused_parameters: bool = False,
) -> TrainingBackend:
    """AdamW and its schedule over `module`, stepped by DeepSpeed (`use_deepspeed`) or plain torch."""
    optimizer = build_optimizer(module.named_parameters(), optim_cfg)
    scheduler = build_scheduler(optimizer, total_steps, warmup_steps, schedule)
    if use_deepspeed:
        from lakd.train.deepspeed_engine import DeepSpeedBackend, build_deepspeed_config

        ds_cfg = build_deepspeed_config(
            zero_stage=zero_stage,
            grad_accum=int(optim_cfg.grad_accum),
            grad_clip=optim_cfg.grad_clip,
            precision=precision,
            micro_batch_size=micro_batch_size or 1,
            world_size=dist.world_size,
            log_every=log_every,
        )
        return DeepSpeedBackend(module, optimizer, scheduler, ds_cfg)
    if zero_stage:
        raise ValueError(f"zero_stage={zero_stage} needs use_deepspeed=True (launch.deepspeed: true)")
    return PlainBackend(
        module,
        optimizer,
        scheduler,
        precision,
        dist.device,
        optim_cfg.grad_clip,
        ddp=dist.distributed,
        find_unused_parameters=find_unused_parameters,
    )
