"""One training loop for teachers, the student and every baseline.

    trainer = Trainer(model, cfg.student_optim, loss_fn=loss_fn, train_loader_factory=lambda epoch: loader(epoch),
                      eval_fn=dev_eval, out_dir=run_dir, dist=init_distributed(), logger=logger,
                      steps_per_epoch=batches_per_epoch, use_deepspeed=False, extra_meta={...}, seed=0)
    summary = trainer.fit()     # resumes from out_dir/last if a previous attempt left a state there

Contracts
- `loss_fn(model, batch) -> (loss, {name: scalar})`: `model` is what to call (the model itself, or its DDP /
  DeepSpeed wrapper); call it, do not read attributes from it. Every named term is logged as ``train/<name>``.
- `train_loader_factory(epoch) -> iterable of batches`, deterministic for a given epoch (resuming mid-epoch
  re-creates the epoch's iterable and skips the batches already used). If it accepts a ``skip`` keyword,
  it is called as ``factory(epoch, skip=b)`` and must start at batch b itself (cheaper than skipping here).
- `steps_per_epoch`: batches the factory yields per epoch on each rank. An epoch has
  ``steps_per_epoch // grad_accum`` optimizer steps; leftover batches are not used, and an epoch ends early
  (on every rank together) when any rank's loader runs out.
- `eval_fn(model) -> {"ua": .., "wa": .., ...}` gets the bare model (in eval mode, RNG-isolated), is called on
  every rank (so it may shard and gather) and rank 0's result is used. Selection uses
  `optim_cfg.select_metric` on these dev metrics, never on test.

Files (rank 0; see lakd.train.checkpoint): `best/`, `last/` (+ trainer_state.pt), `metrics.jsonl`,
`summary.json`. Preemption: SIGUSR1/SIGTERM set a flag; at the next step boundary the loop writes `last/` and
raises `Preempted` (lakd.train.preemption: launchers requeue, a CLI exits with EXIT_PREEMPTED; the next attempt
resumes).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from lakd.choices import LR_SCHEDULES, PRECISIONS
from lakd.config import OptimConfig
from lakd.train import checkpoint as ckpt
from lakd.train import distributed as D
from lakd.train.distributed import DistInfo
from lakd.train.preemption import Preempted, StopSignalFlag
from lakd.train.runtime import seed_everything

LossFn = Callable[[Any, dict], "tuple[torch.Tensor, Mapping[str, Any]]"]
SUMMARY_FILE = "summary.json"
BEST_DIR = "best"
LAST_DIR = "last"
EXTRA_MODULES_FILE = "extra_modules.pt"
MAX_CONSECUTIVE_NONFINITE = 20


# --------------------------------------------------------------------------------------- precision / LR


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


def _accumulate(sums: dict, key: str, value: Any) -> None:
    """Sum a logged term without a device sync per step (tensors stay on the device until logging)."""
    v = value.detach().float().mean() if torch.is_tensor(value) else float(value)
    sums[key] = sums[key] + v if key in sums else v


class _ModelWithExtras(nn.Module):
    """One module holding the model and the extra trainable modules, so DDP/DeepSpeed sync and save them all.
    Forward is the model's; the loss function reaches the extras through its own references."""

    def __init__(self, model: nn.Module, extras: Mapping[str, nn.Module]):
        super().__init__()
        self.model = model
        self.extras = nn.ModuleDict(dict(extras))

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


# ------------------------------------------------------------------------------------------- backends


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


# --------------------------------------------------------------------------------------------- trainer


class Trainer:
    """See the module docstring. `fit()` returns the summary dict (also written to out_dir/summary.json)."""

    def __init__(
        self,
        model: nn.Module,
        optim_cfg: OptimConfig,
        *,
        loss_fn: LossFn,
        train_loader_factory: Callable[..., Iterable[dict]],
        steps_per_epoch: int,
        out_dir: str | Path,
        dist: DistInfo | None = None,
        logger=None,
        eval_fn: Callable[[nn.Module], dict] | None = None,
        use_deepspeed: bool = False,
        zero_stage: int = 0,
        extra_modules: Mapping[str, nn.Module] | None = None,
        extra_meta: dict | None = None,
        seed: int = 0,
        log_every: int = 10,
        resume: bool = True,
        micro_batch_size: int | None = None,
        find_unused_parameters: bool = False,
        handle_signals: bool = True,
        lr_schedule: str | None = None,
    ):
        self.cfg = optim_cfg
        self.out_dir = Path(out_dir)
        if dist is None:
            p = next(iter(model.parameters()), None)
            dist = D.single_process_info(p.device if p is not None else "cpu")
        self.dist = dist
        self.device = dist.device
        self.model = model.to(self.device)
        self.extra_modules = {k: m.to(self.device) for k, m in (extra_modules or {}).items()}
        self.loss_fn = loss_fn
        self.factory = train_loader_factory
        self.eval_fn = eval_fn
        self.extra_meta = dict(extra_meta or {})
        self.seed = int(seed)
        self.log_every = max(1, int(log_every))
        self.resume = resume
        self.use_deepspeed = use_deepspeed
        if logger is None:
            from lakd.train.logging import RunLogger

            logger = RunLogger(self.out_dir, enabled_on_rank0=dist.is_main)
        self.logger = logger

        ga = int(optim_cfg.grad_accum)
        if ga < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {ga}")
        if steps_per_epoch < ga:
            raise ValueError(
                f"steps_per_epoch ({steps_per_epoch} batches) is smaller than grad_accum ({ga}): "
                "an epoch would have no optimizer step"
            )
        if optim_cfg.select_metric not in ("ua", "wa") and eval_fn is not None:
            pass  # any key eval_fn returns is allowed; checked at the first evaluation
        self.grad_accum = ga
        self.batches_per_epoch = int(steps_per_epoch)
        self.optim_steps_per_epoch = self.batches_per_epoch // ga
        self.total_steps = (
            int(optim_cfg.max_steps) if optim_cfg.max_steps else int(optim_cfg.epochs) * self.optim_steps_per_epoch
        )
        if self.total_steps < 1:
            raise ValueError("nothing to do: optim.max_steps / optim.epochs give 0 optimizer steps")
        self.warmup_steps = int(round(optim_cfg.warmup_ratio * self.total_steps))
        self.precision = resolve_precision(optim_cfg.precision, self.device)
        try:
            self._factory_skips = "skip" in inspect.signature(train_loader_factory).parameters
        except (TypeError, ValueError):
            self._factory_skips = False

        # always the same wrapper, so state dicts match whatever the launcher (1 process, DDP, DeepSpeed)
        module = _ModelWithExtras(self.model, self.extra_modules)
        self.module = module
        optimizer = build_optimizer(module.named_parameters(), optim_cfg)
        schedule = lr_schedule or getattr(optim_cfg, "schedule", "cosine")
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(self.total_steps, self.warmup_steps, schedule)
        )
        if use_deepspeed:
            from lakd.train.deepspeed_engine import DeepSpeedBackend, build_deepspeed_config

            ds_cfg = build_deepspeed_config(
                zero_stage=zero_stage,
                grad_accum=ga,
                grad_clip=optim_cfg.grad_clip,
                precision=self.precision,
                micro_batch_size=micro_batch_size or 1,
                world_size=dist.world_size,
                log_every=self.log_every,
            )
            self.backend = DeepSpeedBackend(module, optimizer, scheduler, ds_cfg)
        else:
            if zero_stage:
                raise ValueError(f"zero_stage={zero_stage} needs use_deepspeed=True (launch.deepspeed: true)")
            self.backend = PlainBackend(
                module,
                optimizer,
                scheduler,
                self.precision,
                self.device,
                optim_cfg.grad_clip,
                ddp=dist.distributed,
                find_unused_parameters=find_unused_parameters,
            )
        # progress, all saved in the trainer state
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.samples_seen = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.last_eval: dict | None = None
        self.last_eval_step: int | None = None
        self.stop_reason: str | None = None
        self.train_seconds = 0.0
        self.nonfinite_skips = 0
        self._consecutive_nonfinite = 0
        self._stop_signal = StopSignalFlag(enabled=handle_signals)
        self._pending_rng: dict | None = None

    # ------------------------------------------------------------------------------------------ utils
    def _batch_size(self, batch: Mapping) -> int:
        for key in ("labels", "input_values"):
            v = batch.get(key)
            if torch.is_tensor(v):
                return int(v.shape[0])
        for v in batch.values():
            if torch.is_tensor(v) or isinstance(v, list):
                return len(v)
        return 0

    def _to_device(self, batch: Mapping) -> dict:
        nb = self.device.type == "cuda"
        return {k: (v.to(self.device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def _meta(self, **more) -> dict:
        return {
            **self.extra_meta,
            "step": self.step,
            "epoch": self.epoch,
            "select_metric": self.cfg.select_metric,
            **more,
        }

    def _epoch_seed(self, epoch: int) -> int:
        return int(np.random.SeedSequence([self.seed, epoch, self.dist.rank]).generate_state(1)[0])

    # ------------------------------------------------------------------------------------- checkpoints
    def _trainer_state(self, rng_by_rank: list) -> dict:
        return {
            "version": ckpt.STATE_VERSION,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "last_eval": self.last_eval,
            "last_eval_step": self.last_eval_step,
            "stop_reason": self.stop_reason,
            "train_seconds": self.train_seconds,
            "nonfinite_skips": self.nonfinite_skips,
            "finished": self.stop_reason is not None,
            "rng": rng_by_rank,
            "world_size": self.dist.world_size,
            "grad_accum": self.grad_accum,
            "batches_per_epoch": self.batches_per_epoch,
            "total_steps": self.total_steps,
            "deepspeed": self.use_deepspeed,
            "backend": self.backend.state_dict(),
        }

    def save_checkpoint(self) -> Path:
        """Write out_dir/last (model + trainer state) atomically. Collective: call on every rank."""
        final = self.out_dir / LAST_DIR
        rng_by_rank = D.all_gather_object(ckpt.capture_rng())
        stage = final.with_name(f".{final.name}.staging")
        if self.dist.is_main:  # the model first: save_pretrained may (re)create the directory
            ckpt.staging_dir(final)
            ckpt.save_model_dir(self.model, stage, self._meta(checkpoint="last", dev=self.last_eval))
        D.barrier()
        self.backend.save(stage)  # DeepSpeed: every rank writes its partition
        D.barrier()
        if self.dist.is_main:
            if self.extra_modules:
                ckpt.atomic_torch_save(
                    {k: m.state_dict() for k, m in self.extra_modules.items()}, stage / EXTRA_MODULES_FILE
                )
            ckpt.atomic_torch_save(self._trainer_state(rng_by_rank), stage / ckpt.TRAINER_STATE)
            ckpt.replace_dir(stage, final)
        D.barrier()
        return final

    def _save_best(self, metrics: dict) -> None:
        if self.dist.is_main:
            final = self.out_dir / BEST_DIR
            stage = ckpt.staging_dir(final)
            ckpt.save_model_dir(self.model, stage, self._meta(checkpoint="best", dev=metrics))
            if self.extra_modules:
                ckpt.atomic_torch_save(
                    {k: m.state_dict() for k, m in self.extra_modules.items()}, stage / EXTRA_MODULES_FILE
                )
            ckpt.replace_dir(stage, final)
        D.barrier()

    def _try_resume(self) -> bool:
        state = ckpt.load_trainer_state(self.out_dir / LAST_DIR)
        if state is None:
            return False
        where = state["_dir"]
        if bool(state["deepspeed"]) != self.use_deepspeed:
            raise RuntimeError(
                f"{where}: checkpoint was written {'with' if state['deepspeed'] else 'without'} "
                "DeepSpeed; resume it the same way (launch.deepspeed) or use another out_dir"
            )
        if state["grad_accum"] != self.grad_accum or state["batches_per_epoch"] != self.batches_per_epoch:
            self.logger.event(
                "resume_warning",
                message="grad_accum or batches per epoch changed since the "
                "checkpoint; the position inside the epoch is approximate",
            )
        if self.use_deepspeed:
            self.backend.load(Path(where))
        else:
            self.backend.load_state_dict(state["backend"])
        for key in (
            "step",
            "epoch",
            "batch_in_epoch",
            "samples_seen",
            "best_metric",
            "best_step",
            "bad_evals",
            "last_eval",
            "last_eval_step",
            "stop_reason",
            "train_seconds",
            "nonfinite_skips",
        ):
            setattr(self, key, state[key])
        rng = state["rng"]
        if state["world_size"] == self.dist.world_size:
            self._pending_rng = rng[self.dist.rank]
        else:
            self.logger.event(
                "resume_warning",
                message=f"world size changed ({state['world_size']} -> "
                f"{self.dist.world_size}); RNG streams restart from the seed",
            )
        self.logger.event(
            "resume", step=self.step, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, checkpoint=where
        )
        return True

    # ------------------------------------------------------------------------------------------- eval
    def _evaluate(self) -> None:
        if self.eval_fn is None:
            return
        was_training = self.model.training
        self.model.eval()
        t0 = time.perf_counter()
        with ckpt.rng_isolated(), torch.no_grad(), autocast_context(self.precision, self.device):
            metrics = self.eval_fn(self.model)
        self.model.train(was_training)
        metrics = D.broadcast_object(
            {
                k: (float(v) if isinstance(v, (int, float, np.floating)) or torch.is_tensor(v) else v)
                for k, v in dict(metrics).items()
            }
        )
        key = self.cfg.select_metric
        if key not in metrics:
            raise KeyError(f"eval_fn returned {sorted(metrics)}, which lacks optim.select_metric={key!r}")
        value = float(metrics[key])
        self.last_eval, self.last_eval_step = metrics, self.step
        improved = self.best_metric is None or value > self.best_metric
        self.logger.log(
            {
                **{f"dev/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                "dev/eval_seconds": time.perf_counter() - t0,
            },
            step=self.step,
        )
        if improved:
            self.best_metric, self.best_step, self.bad_evals = value, self.step, 0
            self._save_best(metrics)
            self.logger.event("best", step=self.step, **{key: value})
        else:
            self.bad_evals += 1
            patience = self.cfg.early_stopping_patience
            if patience and self.bad_evals >= patience:
                self.stop_reason = "early_stopping"
                self.logger.event(
                    "early_stop",
                    step=self.step,
                    best_step=self.best_step,
                    best=self.best_metric,
                    evaluations_without_gain=self.bad_evals,
                )

    # ------------------------------------------------------------------------------------------- loop
    def _epoch_iterator(self, epoch: int, skip: int):
        """The epoch's batches from batch `skip` on; the global RNG is reseeded per (seed, epoch, rank) first so
        anything the loader draws from it (e.g. DataLoader worker seeds) is the same on a resumed run."""
        seed_everything(self._epoch_seed(epoch))
        if self._factory_skips:
            it = iter(self.factory(epoch, skip=skip))
        else:
            it = iter(self.factory(epoch))
            if skip:
                for _ in itertools.islice(it, skip):
                    pass
        return it

    def _fetch_window(self, it) -> list[dict]:
        window = []
        for _ in range(self.grad_accum):
            try:
                window.append(next(it))
            except StopIteration:
                break
        return window

    def fit(self) -> dict:
        """Train to the end (or early stop); returns the summary. Raises `Preempted` on SIGUSR1/SIGTERM."""
        resumed = self.resume and self._try_resume()
        if resumed and self.stop_reason is not None:
            self.logger.event("already_finished", step=self.step, reason=self.stop_reason)
            return self._finish(write=False)
        if not resumed:
            self.logger.event(
                "start",
                step=0,
                total_steps=self.total_steps,
                warmup_steps=self.warmup_steps,
                precision=self.precision,
                world_size=self.dist.world_size,
                grad_accum=self.grad_accum,
                deepspeed=self.use_deepspeed,
                trainable_params=sum(p.numel() for p in self.module.parameters() if p.requires_grad),
            )
        with self._stop_signal:
            self._loop()
        return self._finish(write=True)

    def _loop(self) -> None:
        self.module.train()
        sums: dict[str, Any] = {}
        count = 0
        window_samples = 0
        window_seconds = 0.0
        while self.step < self.total_steps and self.stop_reason is None:
            epoch = self.epoch
            it = None
            usable = self.optim_steps_per_epoch * self.grad_accum
            if self.batch_in_epoch < usable:
                it = self._epoch_iterator(epoch, self.batch_in_epoch)
            if self._pending_rng is not None:  # resumed: continue the RNG streams where the checkpoint left them
                ckpt.restore_rng(self._pending_rng)
                self._pending_rng = None
            short = False
            while it is not None and self.batch_in_epoch < usable and self.step < self.total_steps:
                if self._any_rank(self._stop_signal.received is not None):
                    self._preempt()
                t_step = time.perf_counter()
                window = self._fetch_window(it)
                if self._any_rank(len(window) < self.grad_accum):
                    self.logger.event(
                        "epoch_short", step=self.step, epoch=epoch, batches=self.batch_in_epoch, expected=usable
                    )
                    short = True
                    break
                n_samples = 0
                lr_used = self.backend.lr()  # before DeepSpeed steps the scheduler inside backward
                for i, batch in enumerate(window):
                    batch = self._to_device(batch)
                    n_samples += self._batch_size(batch)
                    with self.backend.no_sync(i == len(window) - 1):
                        with autocast_context(self.precision, self.device):
                            loss, terms = self.loss_fn(self.backend.forward_model, batch)
                        self.backend.backward(loss, len(window))
                    _accumulate(sums, "loss", loss)
                    for k, v in (terms or {}).items():
                        if k != "loss":
                            _accumulate(sums, k, v)
                    count += 1
                grad_norm, applied = self.backend.optimizer_step()
                self._check_nonfinite(grad_norm, applied)
                self.step += 1
                self.batch_in_epoch += len(window)
                self.samples_seen += n_samples
                window_samples += n_samples
                seconds = time.perf_counter() - t_step
                window_seconds += seconds
                self.train_seconds += seconds
                if self.step % self.log_every == 0 or self.step == self.total_steps:
                    self._log_train(sums, count, window_samples, window_seconds, grad_norm, lr_used)
                    sums, count, window_samples, window_seconds = {}, 0, 0, 0.0
                if self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                    self._evaluate()
                if self.step >= self.total_steps and self.stop_reason is None:
                    self.stop_reason = "max_steps" if self.cfg.max_steps else "epochs"
                if self.stop_reason is not None:
                    break
                if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                    self.logger.event("checkpoint", step=self.step)
            if short or self.batch_in_epoch >= usable:  # end of epoch
                self.epoch += 1
                self.batch_in_epoch = 0
                if not self.cfg.eval_every and self.last_eval_step != self.step:
                    self._evaluate()
            if self.step >= self.total_steps and self.stop_reason is None:
                self.stop_reason = "max_steps" if self.cfg.max_steps else "epochs"
        if self.eval_fn is not None and self.last_eval_step != self.step:
            self._evaluate()

    def _any_rank(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any (keeps ranks in lock-step on stop decisions)."""
        if not self.dist.distributed:
            return flag
        return bool(D.all_reduce_tensor(torch.tensor([float(flag)]), "max")[0] > 0)

    def _check_nonfinite(self, grad_norm: float | None, applied: bool) -> None:
        if applied and (grad_norm is None or math.isfinite(grad_norm)):
            self._consecutive_nonfinite = 0
            return
        self.nonfinite_skips += 1
        self._consecutive_nonfinite += 1
        self.logger.event(
            "nonfinite_gradients_skipped", step=self.step, grad_norm=grad_norm, total_skipped=self.nonfinite_skips
        )
        if self._consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
            raise FloatingPointError(
                f"{MAX_CONSECUTIVE_NONFINITE} optimizer steps in a row had non-finite "
                f"gradients (last at step {self.step}); lower optim.lr or check the data"
            )

    def _log_train(
        self, sums: dict, count: int, samples: int, seconds: float, grad_norm: float | None, lr: float
    ) -> None:
        means = {k: float(v) / max(count, 1) for k, v in sums.items()}
        if self.dist.distributed:
            means = D.all_reduce_dict(means, "mean")
            samples = int(D.all_reduce_sum(samples))
        values = {f"train/{k}": v for k, v in means.items()}
        values["train/lr"] = lr  # the rate the logged step used
        if grad_norm is not None:
            values["train/grad_norm"] = grad_norm
        values["train/samples_per_s"] = samples / seconds if seconds > 0 else float("nan")
        values["train/epoch"] = self.epoch + self.batch_in_epoch / max(1, self.batches_per_epoch)
        self.logger.log(values, step=self.step)

    def _preempt(self) -> None:
        name = self._stop_signal.received or "a signal on another rank"
        path = self.save_checkpoint()
        self.logger.event("preempted", step=self.step, signal=name, checkpoint=str(path))
        raise Preempted(self.step, str(path), name)

    def _finish(self, write: bool) -> dict:
        if write:
            self.save_checkpoint()
            if self.eval_fn is None:  # nothing to select on: the final model is the one to use
                self._save_best({})
        summary = {
            "steps": self.step,
            "epochs_completed": self.epoch,
            "total_steps": self.total_steps,
            "stop_reason": self.stop_reason,
            "select_metric": self.cfg.select_metric,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "last_dev": self.last_eval,
            "samples_seen": self.samples_seen,
            "train_seconds": round(self.train_seconds, 3),
            "samples_per_s": self.samples_seen * self.dist.world_size / self.train_seconds
            if self.train_seconds
            else None,
            "nonfinite_skips": self.nonfinite_skips,
            "precision": self.precision,
            "deepspeed": self.use_deepspeed,
            "world_size": self.dist.world_size,
            "best_dir": str(self.out_dir / BEST_DIR),
            "last_dir": str(self.out_dir / LAST_DIR),
        }
        if write and self.dist.is_main:
            from lakd.io import atomic_write_json

            atomic_write_json(self.out_dir / SUMMARY_FILE, json.loads(json.dumps(summary, default=str)))
            self.logger.summary({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
        return summary
