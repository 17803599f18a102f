"""The loader's skipped samples in a training run's records: each epoch's counts by reason in metrics.jsonl
(and W&B, through the same metrics dict), the run's totals in summary.json.

Each batch carries its rank's new skip counts (`batch["skipped"]`, {reason: n}; lakd.data.loader), so the
counts travel with the data out of DataLoader worker processes and count exactly the batches the trainer
used, even when it stops reading an epoch before its workers finish. The trainer adds them to
`TrainingProgress.epoch_skipped`; the functions here are collective (call them on every rank).

Invariant: summed over ranks, `epoch_skipped` is the epoch's count so far. A checkpoint folds every rank's
counts onto rank 0 (the state saved is rank 0's); a resumed rank other than 0 starts from none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from lakd.train import distributed as D
from lakd.train.distributed import DistInfo
from lakd.train.progress import TrainingProgress


def _sum_over_ranks(counts: Mapping[str, int], dist: DistInfo) -> dict[str, int]:
    if not dist.distributed:
        return dict(counts)
    total: Counter = Counter()
    for c in D.all_gather_object(dict(counts)):
        total.update(c)
    return dict(total)


def fold_onto_rank0(progress: TrainingProgress, dist: DistInfo) -> None:
    """Before a checkpoint: rank 0 holds the epoch's counts of every rank, the others none."""
    if dist.distributed:
        total = _sum_over_ranks(progress.epoch_skipped, dist)
        progress.epoch_skipped = total if dist.rank == 0 else {}


def after_resume(progress: TrainingProgress, dist: DistInfo) -> None:
    """Every rank resumes from rank 0's state, which holds the epoch's counts of all ranks: keep them once."""
    if dist.rank != 0:
        progress.epoch_skipped = {}


def skip_metrics(counts: Mapping[str, int], name: str = "data/skipped") -> dict[str, int]:
    """`<name>` (the total) and `<name>/<reason>` for each reason with skips."""
    return {name: int(sum(counts.values())), **{f"{name}/{r}": int(n) for r, n in sorted(counts.items())}}


def describe(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "no samples skipped"
    return f"{total} skipped (" + ", ".join(f"{r}={n}" for r, n in sorted(counts.items())) + ")"


def end_epoch(progress: TrainingProgress, dist: DistInfo, logger, epoch: int, partial: bool = False) -> dict:
    """Log the epoch's counts (all ranks) as metrics and an `epoch_end` event, add them to the run's totals."""
    counts = _sum_over_ranks(progress.epoch_skipped, dist)
    progress.epoch_skipped = {}
    for reason, n in counts.items():
        progress.skipped[reason] = progress.skipped.get(reason, 0) + n
    logger.log(skip_metrics(counts), step=progress.step, console=False)
    logger.event("epoch_end", step=progress.step, epoch=epoch, partial=partial, skipped=describe(counts))
    return counts


def run_totals(progress: TrainingProgress, dist: DistInfo) -> dict[str, int]:
    """The run's skip counts by reason: reported epochs plus the unreported part of the current one."""
    total = Counter(progress.skipped)
    total.update(_sum_over_ranks(progress.epoch_skipped, dist))
    return dict(sorted(total.items()))
