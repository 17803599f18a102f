"""Where a training run stands: the counters the loop advances, saved with every checkpoint, restored on resume.

One dataclass, so the list of fields is written once (the trainer used to list them when starting, when saving
and when resuming). In trainer_state.pt they are stored as top-level keys beside the run's shape (world size,
grad accumulation, ...), as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class TrainingProgress:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # loader batches of the current epoch already used
    samples_seen: int = 0  # on this rank
    best_metric: float | None = None  # the best dev value of optim.select_metric so far
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the best one (early stopping)
    last_eval: dict | None = None  # the latest dev metrics
    last_eval_step: int | None = None
    stop_reason: str | None = None  # max_steps | epochs | early_stopping once finished
    train_seconds: float = 0.0  # time inside training steps (not evaluation or checkpoints)
    nonfinite_skips: int = 0  # optimizer steps skipped for non-finite gradients
    # samples the loader skipped, by reason (batch["skipped"]): of the current epoch, not yet reported (this
    # rank's, plus every rank's up to the last checkpoint on rank 0), and of the run's reported epochs (all ranks)
    epoch_skipped: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def as_state(self) -> dict:
        """The fields as trainer-state keys (plus `finished`, which readers of the file use)."""
        return {**dataclasses.asdict(self), "finished": self.finished}

    @classmethod
    def from_state(cls, state: dict) -> TrainingProgress:
        """The fields of a trainer state (one written before a field existed gets its default)."""
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls) if f.name in state})

    def add_epoch_skips(self, counts: Mapping[str, int] | None) -> None:
        """Add a batch's loader skip counts ({reason: n}) to the current epoch's."""
        for reason, n in (counts or {}).items():
            self.epoch_skipped[reason] = self.epoch_skipped.get(reason, 0) + int(n)
