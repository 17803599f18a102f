"""The loader side of the training loop: each epoch's batches, reproducible on a resumed run.

`train_loader_factory(epoch)` must give the same batches for the same epoch; before calling it the global
RNGs are reseeded from (seed, epoch, rank), so whatever the loader draws from them (e.g. DataLoader worker
seeds) repeats too. Resuming mid-epoch skips the batches already used (a factory that takes ``skip=`` starts
there itself, which is cheaper). The loop takes batches in windows of `grad_accum`, one optimizer step each.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from lakd.train.runtime import seed_everything


class EpochBatches:
    def __init__(self, factory: Callable[..., Iterable[dict]], seed: int, rank: int, grad_accum: int):
        self.factory, self.seed, self.rank, self.grad_accum = factory, int(seed), rank, grad_accum
        try:
            self.factory_skips = "skip" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            self.factory_skips = False

    def epoch_seed(self, epoch: int) -> int:
        return int(np.random.SeedSequence([self.seed, epoch, self.rank]).generate_state(1)[0])

    def open(self, epoch: int, skip: int) -> Iterator[dict]:
        """The epoch's batches from batch `skip` on (the global RNGs reseeded first)."""
        seed_everything(self.epoch_seed(epoch))
        if self.factory_skips:
            return iter(self.factory(epoch, skip=skip))
        it = iter(self.factory(epoch))
        for _ in itertools.islice(it, skip):
            pass
        return it

    def next_window(self, it: Iterator[dict]) -> list[dict]:
        """Up to `grad_accum` batches (fewer when the epoch's iterable runs out)."""
        return list(itertools.islice(it, self.grad_accum))
