"""Samples to batches: zero-padded collation, optional length bucketing, and each worker's share of an epoch."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator

import torch

from lakd.data.samples import LabeledSample


def collate(samples: list[LabeledSample]) -> dict:
    """Zero-pad to the longest sample; the batch contract of docs/architecture.md (+ `speakers`)."""
    lengths = [int(s.audio.numel()) for s in samples]
    T = max(lengths)
    x = torch.zeros(len(samples), T, dtype=torch.float32)
    mask = torch.zeros(len(samples), T, dtype=torch.int64)
    for i, (s, n) in enumerate(zip(samples, lengths)):
        x[i, :n] = s.audio
        mask[i, :n] = 1
    return {
        "input_values": x,
        "attention_mask": mask,
        "labels": torch.tensor([s.label for s in samples], dtype=torch.int64),
        "language_ids": torch.tensor([s.language_id for s in samples], dtype=torch.int64),
        "keys": [s.key for s in samples],
        "languages": [s.language for s in samples],
        "speakers": [s.speaker for s in samples],
    }


def batches(
    samples: Iterable[LabeledSample], batch_size: int, bucket: bool, bucket_buffer: int, rng: random.Random | None
) -> Iterator[dict]:
    """Plain batches in stream order, or length-bucketed: gather a buffer, sort by length, cut, shuffle order.

    The bucket size is a multiple of the batch size, so only the very last batch can be partial.
    """
    if not bucket:
        batch: list[LabeledSample] = []
        for s in samples:
            batch.append(s)
            if len(batch) == batch_size:
                yield collate(batch)
                batch = []
        if batch:
            yield collate(batch)
        return
    size = max(batch_size, (bucket_buffer // batch_size) * batch_size)

    def emit(buf: list[LabeledSample]) -> Iterator[dict]:
        buf.sort(key=lambda s: (s.audio.numel(), s.key))
        chunks = [buf[i : i + batch_size] for i in range(0, len(buf), batch_size)]
        if rng is not None:
            rng.shuffle(chunks)
        for c in chunks:
            yield collate(c)

    buf = []
    for s in samples:
        buf.append(s)
        if len(buf) == size:
            yield from emit(buf)
            buf = []
    if buf:
        yield from emit(buf)


def worker_quota(rank_samples: int, batch_size: int, worker: int, num_workers: int) -> int:
    """Samples one worker yields per epoch: whole batches, the one partial batch on one worker only.

    So a rank yields exactly ceil(rank_samples / batch_size) batches whatever the worker count.
    """
    nb = math.ceil(rank_samples / batch_size)
    base, extra = divmod(nb, num_workers)
    mine = base + (worker < extra)
    last = extra - 1 if extra > 0 else num_workers - 1  # a worker that has the highest batch count
    n = mine * batch_size
    if worker == last:
        n -= nb * batch_size - rank_samples
    return max(n, 0)
