"""The training metrics of one logging window (`log_every` optimizer steps), logged as ``train/<name>``.

Loss terms are summed on the device (no sync per batch) and averaged over the window's batches and over
ranks when logged; throughput counts every rank's samples; the learning rate is the one the logged step
used and the gradient norm the one before clipping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lakd.train import distributed as D


def batch_size(batch: Mapping) -> int:
    """Samples in a batch: the length of its labels (or audio, or any tensor or list in it)."""
    for key in ("labels", "input_values"):
        v = batch.get(key)
        if torch.is_tensor(v):
            return int(v.shape[0])
    for v in batch.values():
        if torch.is_tensor(v) or isinstance(v, list):
            return len(v)
    return 0


class TrainMetricsWindow:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Any] = {}
        self.batches = 0
        self.samples = 0
        self.seconds = 0.0

    def _add(self, key: str, value: Any) -> None:
        v = value.detach().float().mean() if torch.is_tensor(value) else float(value)
        self.sums[key] = self.sums[key] + v if key in self.sums else v

    def add_batch(self, loss: torch.Tensor, terms: Mapping[str, Any] | None) -> None:
        """The loss and the loss function's named terms of one batch."""
        self._add("loss", loss)
        for k, v in (terms or {}).items():
            if k != "loss":
                self._add(k, v)
        self.batches += 1

    def add_step(self, samples: int, seconds: float) -> None:
        self.samples += samples
        self.seconds += seconds

    def values(self, dist: D.DistInfo, lr: float, grad_norm: float | None, epoch: float) -> dict[str, float]:
        """The window's ``train/...`` values. Collective when several processes train: call on every rank."""
        means = {k: float(v) / max(self.batches, 1) for k, v in self.sums.items()}
        samples = self.samples
        if dist.distributed:
            means = D.all_reduce_dict(means, "mean")
            samples = int(D.all_reduce_sum(samples))
        values = {f"train/{k}": v for k, v in means.items()}
        values["train/lr"] = lr
        if grad_norm is not None:
            values["train/grad_norm"] = grad_norm
        values["train/samples_per_s"] = samples / self.seconds if self.seconds > 0 else float("nan")
        values["train/epoch"] = epoch
        return values
