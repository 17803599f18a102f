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
`summary.json`, `run.lock` (held while `fit` runs, lakd.run_lock). Preemption: SIGUSR1/SIGTERM set a flag;
at the next step boundary the loop writes `last/` and raises `Preempted` (lakd.train.preemption: launchers
requeue, a CLI exits with EXIT_PREEMPTED; the next attempt resumes).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from lakd.config import OptimConfig
from lakd.train import checkpoint as ckpt
from lakd.train import data_skips
from lakd.train import distributed as D
from lakd.train.backends import ModelWithExtras, build_backend
from lakd.train.checkpoint import BEST_DIR, LAST_DIR, RunCheckpoints
from lakd.train.distributed import DistInfo
from lakd.train.epochs import EpochBatches
from lakd.train.optim import autocast_context, resolve_precision
from lakd.train.preemption import Preempted, StopSignalFlag
from lakd.train.progress import TrainingProgress
from lakd.train.run_dir import hold_for_training
from lakd.train.train_metrics import TrainMetricsWindow, batch_size

LossFn = Callable[[Any, dict], "tuple[torch.Tensor, Mapping[str, Any]]"]
SUMMARY_FILE = "summary.json"
MAX_CONSECUTIVE_NONFINITE = 20


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
        self.eval_fn = eval_fn
        self.extra_meta = dict(extra_meta or {})
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
        self.epochs = EpochBatches(train_loader_factory, seed, dist.rank, ga)

        # always the same wrapper, so state dicts match whatever the launcher (1 process, DDP, DeepSpeed)
        self.module = ModelWithExtras(self.model, self.extra_modules)
        self.backend = build_backend(
            self.module,
            optim_cfg,
            dist=dist,
            precision=self.precision,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            schedule=lr_schedule or optim_cfg.schedule,
            use_deepspeed=use_deepspeed,
            zero_stage=zero_stage,
            micro_batch_size=micro_batch_size,
            log_every=self.log_every,
            find_unused_parameters=find_unused_parameters,
        )
        self.checkpoints = RunCheckpoints(self.out_dir, dist, self.model, self.extra_modules, self.backend)
        self.progress = TrainingProgress()  # all of it is saved in the trainer state
        self._consecutive_nonfinite = 0
        self._stop_signal = StopSignalFlag(enabled=handle_signals)
        self._pending_rng: dict | None = None

    # progress, as read from outside (recipes, tests)
    step = property(lambda self: self.progress.step, doc="optimizer steps taken")
    best_metric = property(lambda self: self.progress.best_metric, doc="the best dev value of optim.select_metric")
    best_step = property(lambda self: self.progress.best_step, doc="the step of the best dev value")

    # ------------------------------------------------------------------------------------------ utils
    def _to_device(self, batch: Mapping) -> dict:
        nb = self.device.type == "cuda"
        return {k: (v.to(self.device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def _meta(self, **more) -> dict:
        return {
            **self.extra_meta,
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "select_metric": self.cfg.select_metric,
            **more,
        }

    # ------------------------------------------------------------------------------------- checkpoints
    def _run_shape(self) -> dict:
        """What a resumed run must match (or is warned about), saved beside the progress."""
        return {
            "world_size": self.dist.world_size,
            "grad_accum": self.grad_accum,
            "batches_per_epoch": self.batches_per_epoch,
            "total_steps": self.total_steps,
            "deepspeed": self.use_deepspeed,
        }

    def save_checkpoint(self) -> Path:
        """Write out_dir/last (model + trainer state) atomically. Collective: call on every rank."""
        data_skips.fold_onto_rank0(self.progress, self.dist)
        state = {**self.progress.as_state(), **self._run_shape(), "backend": self.backend.state_dict()}
        return self.checkpoints.save_last(self._meta(checkpoint="last", dev=self.progress.last_eval), state)

    def _save_best(self, metrics: dict) -> None:
        self.checkpoints.save_best(self._meta(checkpoint="best", dev=metrics))

    def _try_resume(self) -> bool:
        state, warnings = self.checkpoints.load_last(self._run_shape())
        if state is None:
            return False
        for message in warnings:
            self.logger.event("resume_warning", message=message)
        self.progress = p = TrainingProgress.from_state(state)
        data_skips.after_resume(p, self.dist)
        if state["world_size"] == self.dist.world_size:
            self._pending_rng = state["rng"][self.dist.rank]
        where = state["_dir"]
        self.logger.event("resume", step=p.step, epoch=p.epoch, batch_in_epoch=p.batch_in_epoch, checkpoint=where)
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
        p = self.progress
        p.last_eval, p.last_eval_step = metrics, p.step
        improved = p.best_metric is None or value > p.best_metric
        self.logger.log(
            {
                **{f"dev/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                "dev/eval_seconds": time.perf_counter() - t0,
            },
            step=p.step,
        )
        if improved:
            p.best_metric, p.best_step, p.bad_evals = value, p.step, 0
            self._save_best(metrics)
            self.logger.event("best", step=p.step, **{key: value})
        else:
            p.bad_evals += 1
            patience = self.cfg.early_stopping_patience
            if patience and p.bad_evals >= patience:
                p.stop_reason = "early_stopping"
                self.logger.event(
                    "early_stop",
                    step=p.step,
                    best_step=p.best_step,
                    best=p.best_metric,
                    evaluations_without_gain=p.bad_evals,
                )

    # ------------------------------------------------------------------------------------------- loop
    def fit(self) -> dict:
        """Train to the end (or early stop); returns the summary. Raises `Preempted` on SIGUSR1/SIGTERM.

        Holds out_dir's run lock throughout (lakd.train.run_dir): another run into it gets RunDirBusy."""
        broadcast = D.broadcast_object if self.dist.distributed else None
        with hold_for_training(self.out_dir, self.dist.is_main, broadcast):
            return self._fit()

    def _fit(self) -> dict:
        resumed = self.resume and self._try_resume()
        if resumed and self.progress.stop_reason is not None:
            self.logger.event("already_finished", step=self.progress.step, reason=self.progress.stop_reason)
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
        self.logger.start_progress(self.total_steps, self.progress.step)  # step/total, loss, ETA for people watching
        with self._stop_signal:
            self._loop()
        return self._finish(write=True)

    def _loop(self) -> None:
        self.module.train()
        p = self.progress  # resuming replaced it before the loop starts
        window = TrainMetricsWindow()
        usable = self.optim_steps_per_epoch * self.grad_accum  # batches per epoch that make whole steps
        while p.step < self.total_steps and p.stop_reason is None:
            epoch = p.epoch
            it = self.epochs.open(epoch, p.batch_in_epoch) if p.batch_in_epoch < usable else None
            if self._pending_rng is not None:  # resumed: continue the RNG streams where the checkpoint left them
                ckpt.restore_rng(self._pending_rng)
                self._pending_rng = None
            short = False
            while it is not None and p.batch_in_epoch < usable and p.step < self.total_steps:
                if self._any_rank(self._stop_signal.received is not None):
                    self._preempt()
                t_step = time.perf_counter()
                batches = self.epochs.next_window(it)
                if self._any_rank(len(batches) < self.grad_accum):
                    self.logger.event(
                        "epoch_short", step=p.step, epoch=epoch, batches=p.batch_in_epoch, expected=usable
                    )
                    short = True
                    break
                n_samples = 0
                lr_used = self.backend.lr()  # before DeepSpeed steps the scheduler inside backward
                for i, batch in enumerate(batches):
                    p.add_epoch_skips(batch.get("skipped"))  # the loader's skips behind this batch
                    batch = self._to_device(batch)
                    n_samples += batch_size(batch)
                    with self.backend.no_sync(i == len(batches) - 1):
                        with autocast_context(self.precision, self.device):
                            loss, terms = self.loss_fn(self.backend.forward_model, batch)
                        self.backend.backward(loss, len(batches))
                    window.add_batch(loss, terms)
                grad_norm, applied = self.backend.optimizer_step()
                self._check_nonfinite(grad_norm, applied)
                seconds = time.perf_counter() - t_step
                p.step += 1
                p.batch_in_epoch += len(batches)
                p.samples_seen += n_samples
                p.train_seconds += seconds
                window.add_step(n_samples, seconds)
                if p.step % self.log_every == 0 or p.step == self.total_steps:
                    epoch_done = p.epoch + p.batch_in_epoch / max(1, self.batches_per_epoch)
                    self.logger.log(window.values(self.dist, lr_used, grad_norm, epoch_done), step=p.step)
                    window.reset()
                if self.cfg.eval_every and p.step % self.cfg.eval_every == 0:
                    self._evaluate()
                if p.step >= self.total_steps and p.stop_reason is None:
                    p.stop_reason = "max_steps" if self.cfg.max_steps else "epochs"
                if p.stop_reason is not None:
                    break
                if self.cfg.checkpoint_every and p.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                    self.logger.event("checkpoint", step=p.step)
            if short or p.batch_in_epoch >= usable:  # end of epoch
                data_skips.end_epoch(p, self.dist, self.logger, epoch)
                p.epoch += 1
                p.batch_in_epoch = 0
                if not self.cfg.eval_every and p.last_eval_step != p.step:
                    self._evaluate()
            if p.step >= self.total_steps and p.stop_reason is None:
                p.stop_reason = "max_steps" if self.cfg.max_steps else "epochs"
        if p.batch_in_epoch > 0:  # stopped inside an epoch (max_steps, early stopping): report its skips too
            data_skips.end_epoch(p, self.dist, self.logger, p.epoch, partial=True)
        if self.eval_fn is not None and p.last_eval_step != p.step:
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
        p = self.progress
        p.nonfinite_skips += 1
        self._consecutive_nonfinite += 1
        self.logger.event(
            "nonfinite_gradients_skipped", step=p.step, grad_norm=grad_norm, total_skipped=p.nonfinite_skips
        )
        if self._consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
            raise FloatingPointError(
                f"{MAX_CONSECUTIVE_NONFINITE} optimizer steps in a row had non-finite "
                f"gradients (last at step {p.step}); lower optim.lr or check the data"
            )

    def _preempt(self) -> None:
        name = self._stop_signal.received or "a signal on another rank"
        path = self.save_checkpoint()
        self.logger.event("preempted", step=self.progress.step, signal=name, checkpoint=str(path))
        raise Preempted(self.progress.step, str(path), name)

    def _finish(self, write: bool) -> dict:
        if write:
            self.save_checkpoint()
            if self.eval_fn is None:  # nothing to select on: the final model is the one to use
                self._save_best({})
        p = self.progress
        summary = {
            "steps": p.step,
            "epochs_completed": p.epoch,
            "total_steps": self.total_steps,
            "stop_reason": p.stop_reason,
            "select_metric": self.cfg.select_metric,
            "best_metric": p.best_metric,
            "best_step": p.best_step,
            "last_dev": p.last_eval,
            "samples_seen": p.samples_seen,
            "train_seconds": round(p.train_seconds, 3),
            "samples_per_s": p.samples_seen * self.dist.world_size / p.train_seconds if p.train_seconds else None,
            "nonfinite_skips": p.nonfinite_skips,
            "skipped": data_skips.run_totals(p, self.dist),  # samples the loader skipped, by reason
            "precision": self.precision,
            "deepspeed": self.use_deepspeed,
            "world_size": self.dist.world_size,
            "best_dir": str(self.out_dir / BEST_DIR),
            "last_dir": str(self.out_dir / LAST_DIR),
        }
        if write and self.dist.is_main:
            from lakd.io import atomic_write_json

            atomic_write_json(self.out_dir / SUMMARY_FILE, json.loads(json.dumps(summary, default=str)))
            scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
            self.logger.summary({**scalars, **data_skips.skip_metrics(summary["skipped"], "skipped_total")})
        return summary
