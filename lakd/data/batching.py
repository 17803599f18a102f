"""Samples to batches: zero-padded collation, optional length bucketing, and each worker's share of an epoch."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator

import torch

from lakd.data.samples import LabeledSample


def _uninitialised(shape: tuple[int, int], dtype: torch.dtype, shared: bool) -> torch.Tensor:
    """A tensor to fill; with `shared`, in shared memory from the start. A DataLoader worker sends tensors to
    the main process through shared memory and copies any that are not there yet; torch's default_collate
    allocates there for the same reason (docs/data-loading.md#scaling-with-workers).
    """
    if not shared:
        return torch.empty(shape, dtype=dtype)
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(max(nbytes, 1))
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def collate(samples: list[LabeledSample], shared: bool | None = None) -> dict:
    """Zero-padded audio and plain lists: what a worker sends; `finish_batch` in the main process makes the
    batch of docs/architecture.md from it.

    Why not the whole batch here: every tensor a worker sends crosses in its own shared-memory file (one
    socket round trip each for the main process), and fresh shared memory is written at a third of the speed
    of reused memory (page faults). The int64 attention mask was two thirds of those bytes; it is implied by
    the lengths, so the main process writes it into ordinary memory, and labels and language ids travel as
    lists. Each element is written once, through numpy (no torch intra-op threads: see
    lakd.data.audio.to_mono_16k). `shared` (default: inside a DataLoader worker) allocates the audio in
    shared memory.
    """
    if shared is None:
        shared = torch.utils.data.get_worker_info() is not None
    lengths = [int(s.audio.numel()) for s in samples]
    x = _uninitialised((len(samples), max(lengths)), torch.float32, shared)
    xa = x.numpy()
    for i, (s, n) in enumerate(zip(samples, lengths)):
        xa[i, :n] = s.audio.numpy()
        xa[i, n:] = 0.0
    return {
        "input_values": x,
        "lengths": lengths,
        "labels": [s.label for s in samples],
        "language_ids": [s.language_id for s in samples],
        "keys": [s.key for s in samples],
        "languages": [s.language for s in samples],
        "speakers": [s.speaker for s in samples],
    }


def finish_batch(raw: dict) -> dict:
    """The batch contract of docs/architecture.md (+ `speakers`, and any other keys) from `collate`'s output:
    the int64 attention mask (1 for the first `lengths[i]` samples of row i) and the label and language tensors.
    """
    x = raw["input_values"]
    mask = torch.empty(tuple(x.shape), dtype=torch.int64)
    ma = mask.numpy()
    for i, n in enumerate(raw["lengths"]):
        ma[i, :n] = 1
        ma[i, n:] = 0
    rest = {k: v for k, v in raw.items() if k not in ("input_values", "lengths", "labels", "language_ids")}
    return {
        "input_values": x,
        "attention_mask": mask,
        "labels": torch.tensor(raw["labels"], dtype=torch.int64),
        "language_ids": torch.tensor(raw["language_ids"], dtype=torch.int64),
        **rest,
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
