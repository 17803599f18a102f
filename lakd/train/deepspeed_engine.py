"""The DeepSpeed path of the training engine (`Trainer(..., use_deepspeed=True, zero_stage=0|1|2)`).

What this module takes care of, so recipes never touch DeepSpeed directly:

- the config is generated from `OptimConfig` (ZeRO stage, gradient accumulation, clipping, precision);
- the optimizer is our `torch.optim.AdamW` instance plus ``"zero_allow_untested_optimizer": true`` (a config
  ``"optimizer": {"type": "Adam"}`` would JIT-compile fused_adam);
- bf16 uses DeepSpeed's ``torch_autocast`` mode: parameters stay fp32 (so `save_pretrained` writes full
  precision weights and ZeRO<=2 keeps whole parameters on every rank), matmuls/convs run in bf16 and
  gradients are communicated in bf16;
- the `deepspeed_shm_comm` JIT build (90-170 s on CPU) is switched off before `deepspeed.initialize`;
- RANK/WORLD_SIZE/MASTER_* must already be exported (`lakd.train.distributed.init_distributed` does it), so
  DeepSpeed does not fall back to MPI discovery.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from lakd.choices import PRECISIONS

DS_SUBDIR = "deepspeed"
DS_TAG = "state"


def disable_shm_comm_build() -> None:
    """Stop DeepSpeed from JIT-compiling its shared-memory CPU collective (minutes, and gloo works fine)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def build_deepspeed_config(
    *,
    zero_stage: int,
    grad_accum: int,
    grad_clip: float,
    precision: str,
    micro_batch_size: int = 1,
    world_size: int = 1,
    log_every: int = 10,
) -> dict:
    """A DeepSpeed config for our loop. `precision` is the resolved one: fp32 | bf16 | fp16.

    `micro_batch_size` only feeds DeepSpeed's own bookkeeping (train_batch_size = micro * accum * world);
    batches come from our loader, whatever their size.
    """
    if zero_stage not in (0, 1, 2):
        raise ValueError(
            f"zero_stage must be 0, 1 or 2 (ZeRO-3 shards parameters, which save_pretrained "
            f"on rank 0 cannot see), got {zero_stage}"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    micro = max(1, int(micro_batch_size))
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": int(grad_accum),
        "train_batch_size": micro * int(grad_accum) * int(world_size),
        "gradient_clipping": float(grad_clip or 0.0),
        "zero_allow_untested_optimizer": True,
        "zero_optimization": {"stage": int(zero_stage)},
        "steps_per_print": max(1, int(log_every)) * 1000,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    if precision in ("bf16", "fp16"):
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16" if precision == "bf16" else "float16"}
    return cfg


class DeepSpeedBackend:
    """Forward/backward/step and checkpoint I/O through a DeepSpeed engine (a lakd.train.backends.TrainingBackend)."""

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, config: dict):
        import deepspeed

        disable_shm_comm_build()
        for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(
                    f"DeepSpeed needs {var} in the environment: call lakd.train.distributed."
                    "init_distributed() before building the Trainer"
                )
        t0 = time.perf_counter()
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=optimizer, lr_scheduler=scheduler, config=config, dist_init_required=None
        )
        self.init_seconds = time.perf_counter() - t0
        self._norm: float | None = None
        self.config = config
        self.forward_model = self.engine

    def backward(self, loss: torch.Tensor, window: int) -> None:
        # the engine divides by gradient_accumulation_steps itself (window == that number here)
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.backward(loss)
        if boundary and self.engine.zero_optimization_stage() == 0:
            # ZeRO-0 does not report its norm; the gradients are already all-reduced here
            grads = [p.grad.detach().float().norm() for p in self.engine.module.parameters() if p.grad is not None]
            self._norm = float(torch.stack(grads).norm()) if grads else None
        self.engine.step()  # a no-op until the accumulation boundary

    def no_sync(self, last_in_window: bool):
        import contextlib

        return contextlib.nullcontext()

    def optimizer_step(self) -> tuple[float | None, bool]:
        norm = self.engine.get_global_grad_norm()
        if norm is None:
            norm = self._norm
        if torch.is_tensor(norm):
            norm = float(norm)
        return norm, True

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def save(self, directory: Path) -> None:
        """Collective: every rank writes its ZeRO partition under directory/deepspeed."""
        self.engine.save_checkpoint(str(directory / DS_SUBDIR), tag=DS_TAG, client_state={}, save_latest=False)

    def load(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(directory / DS_SUBDIR), tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise RuntimeError(f"{directory / DS_SUBDIR}: DeepSpeed could not load the checkpoint")
