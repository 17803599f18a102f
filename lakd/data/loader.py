"""Streaming loader: WebDataset shards -> padded batches of 16 kHz mono audio (see docs/data-loading.md).

Training streams one shuffled, cycling WebDataset pipeline per language and mixes them with temperature
sampling (p_l ~ n_l^alpha), so small languages are not drowned; an epoch is a fixed number of samples per
rank. Evaluation reads every sample exactly once across ranks and DataLoader workers, in a fixed order.
Bad data never crashes a run mid-epoch: each bad sample is skipped, counted by reason and logged with its
shard and key (or raises `BadSampleError` with `DataConfig.strict`); each batch carries the rank's new skip
counts as `batch["skipped"]` ({reason: n}), which the trainer sums per epoch into metrics.jsonl and summary.json.
A shard that index.json lists but the disk lacks is an error before anything is read (or, with
`data.missing_shards=skip`, a counted `missing_shard` skip every epoch).

This module is the public entry (`build_loader`, `ShardLoader`); the stages live in `plan` (what to read),
`samples` (one sample: check, decode), `batching`, `streams` (a worker's epoch) and `skips` (bad data).
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch

from lakd import SAMPLE_RATE
from lakd.config import DataConfig
from lakd.data.batching import finish_batch
from lakd.data.index import listed_but_absent
from lakd.data.plan import ReadSpec, shard_infos, wanted_language
from lakd.data.shards import INDEX_NAME, expand_urls
from lakd.data.skips import SkipCounter
from lakd.data.streams import ShardDataset, WorkerFailure, WorkerReport

log = logging.getLogger("lakd.data")

EVAL_MAX_FACTOR = 2.0  # eval truncates to this many times cfg.max_seconds (default; see build_loader)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode/resample one sample at a time; threads would oversubscribe


def prefetch_batches(cfg: DataConfig, batch_size: int) -> int:
    """Batches each DataLoader worker may have ready ahead of the consumer: one bucket's worth plus one.

    With bucketing a worker decodes a whole bucket before the first batch of it, then has all of its batches at
    once. DataLoader's default of 2 left it idle until the consumer had taken them, so decoding and the training
    step took turns instead of overlapping (docs/data-loading.md#scaling-with-workers). Ready batches wait in
    shared memory, one file each: the bucket's decoded audio, moved out of the worker, not extra copies.
    """
    if not cfg.bucket:
        return 2
    return max(2, cfg.bucket_buffer // batch_size + 1)


class ShardLoader:
    """Iterable of batches for one rank. `len()` is the number of batches per epoch (exact for training,
    an upper bound from index.json for evaluation). Each pass over it is one epoch; the first uses the
    `epoch` given to build_loader and later passes count up (or `set_epoch`).
    """

    def __init__(self, spec: ReadSpec, skips: SkipCounter, pre_skips: list[tuple]):
        self.spec = spec
        self.skips = skips
        self.last_epoch_skips = SkipCounter()
        self.epoch = spec.epoch
        self._pre_skips = pre_skips

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int | None:
        """Samples per epoch for this rank (training: exact; evaluation: from index.json, None if unknown)."""
        if self.spec.train:
            return self.spec.rank_samples
        if any(s.languages is None for s in self.spec.shards):
            return None
        return sum(self._eval_counts())

    def _eval_counts(self) -> list[int]:
        spec = self.spec
        workers = max(1, spec.cfg.num_workers)
        parts = spec.world_size * workers
        n = [sum(c for l, c in s.languages.items() if wanted_language(spec, l)) for s in spec.shards]
        if len(n) >= parts:
            mine = n[spec.rank :: spec.world_size]
            return [sum(mine[w::workers]) for w in range(workers)]
        total = sum(n)
        return [math.ceil(total / parts)] * workers

    def __len__(self) -> int:
        spec = self.spec
        if spec.train:
            return math.ceil(spec.rank_samples / spec.cfg.batch_size)
        if any(s.languages is None for s in spec.shards):
            raise TypeError("number of eval batches unknown: some shards have no index.json entry")
        return sum(math.ceil(n / spec.cfg.eval_batch_size) for n in self._eval_counts())

    def __iter__(self) -> Iterator[dict]:
        epoch = self.epoch
        self.epoch += 1
        spec = replace(self.spec, epoch=epoch)
        skips = SkipCounter(strict=spec.cfg.strict)
        for reason, shard, detail, n in self._pre_skips:
            skips.add(reason, shard, None, detail, n)
        workers = spec.cfg.num_workers
        batch_size = spec.cfg.batch_size if spec.train else spec.cfg.eval_batch_size
        loader = torch.utils.data.DataLoader(
            ShardDataset(spec),
            batch_size=None,
            num_workers=workers,
            worker_init_fn=_worker_init if workers > 0 else None,
            prefetch_factor=prefetch_batches(spec.cfg, batch_size) if workers > 0 else None,
            persistent_workers=False,
        )
        batches = samples = 0
        finished = False
        try:
            for item in loader:
                if isinstance(item, WorkerReport):
                    skips.merge(item.skips)
                    continue
                if isinstance(item, WorkerFailure):
                    raise item.error()
                item = finish_batch(item)  # here, not in the worker: see lakd.data.batching.collate
                skips.merge({"counts": item.get("skipped", {})})
                item["skipped"] = skips.take_new()  # this rank's new skips (pre-skips ride on the first batch)
                batches += 1
                samples += len(item["keys"])
                yield item
            finished = True
        finally:
            self.skips.merge(skips)
            self.last_epoch_skips = skips
            what = f"train epoch {epoch}" if spec.train else "eval pass"
            state = "" if finished else " (stopped early)"
            level = logging.WARNING if skips.total else logging.INFO
            log.log(
                level,
                "%s, rank %d%s: %d samples in %d batches; %s",
                what,
                spec.rank,
                state,
                samples,
                batches,
                skips.summary(),
            )


def _absent_shards(urls: list[str], plain: ReadSpec) -> list[tuple]:
    """Shards an index.json lists, with samples this loader would read, that are not on disk: an error naming
    the first, or with data.missing_shards=skip one counted `missing_shard` skip each (reported every epoch)."""
    absent = [
        (path, entry)
        for path, entry in listed_but_absent(urls)
        if entry.languages is None or any(wanted_language(plain, l) for l in entry.languages)
    ]
    if not absent:
        return []
    if plain.cfg.missing_shards != "skip":
        path, entry = absent[0]
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        directory = os.path.dirname(path)
        raise FileNotFoundError(
            f"{path}: listed in {os.path.join(directory, INDEX_NAME)} ({entry.num_samples} samples) but not on "
            f"disk{more}; restore it, rebuild the index (`lakd shards index {directory}`) or set "
            "data.missing_shards=skip to go on without it"
        )
    return [
        ("missing_shard", path, f"listed in {INDEX_NAME}, not on disk", entry.num_samples or 1)
        for path, entry in absent
    ]


def build_loader(
    spec,
    labels: Sequence[str],
    languages: Sequence[str],
    *,
    cfg: DataConfig,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    allow_unknown_language: bool = False,
    skips: SkipCounter | None = None,
    language_filter: Sequence[str] | None = None,
    eval_max_seconds: float | None = None,
) -> ShardLoader:
    """Batches of 16 kHz mono audio from WebDataset shards for one rank (see docs/data-loading.md).

    spec: data spec (directory, brace pattern, list). labels/languages: index maps for `labels` and
    `language_ids`. Samples of a language outside `languages` are skipped as unknown, unless
    `allow_unknown_language` (language_id -1). `language_filter` keeps only those languages and drops the
    others silently (a per-language teacher reading a multilingual split). `eval_max_seconds` truncates
    eval audio (default 2 x cfg.max_seconds; <= 0 keeps full length). `skips` accumulates skip counts
    over epochs (default: a new counter at `loader.skips`).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    urls = expand_urls(spec)
    labels, languages = list(labels), list(languages)
    lang_filter = list(language_filter) if language_filter is not None else None
    plain = ReadSpec(
        shards=[],
        labels=labels,
        languages=languages,
        language_filter=lang_filter,
        allow_unknown=allow_unknown_language,
        cfg=cfg,
        train=train,
        seed=seed,
        rank=rank,
        world_size=world_size,
        epoch=epoch,
        rank_samples=0,
        mix={},
        max_samples=None,
    )
    pre_skips = _absent_shards(urls, plain)
    infos = shard_infos(urls, scan_missing=train)
    kept = []
    for info in infos:
        if info.languages is None or any(wanted_language(plain, l) for l in info.languages):
            kept.append(info)
            continue
        for lang, n in info.languages.items():  # whole shard of unwanted languages: not read at all
            if lang_filter is None or lang in lang_filter:
                pre_skips.append(("unknown_language", info.url, f"{n} samples of {lang!r} not in {languages}", n))
    if not kept:
        raise ValueError(f"{spec}: no shards hold samples of languages {lang_filter or languages}")
    if train:
        counts: Counter = Counter()
        for info in kept:
            counts.update({l: n for l, n in info.languages.items() if wanted_language(plain, l)})
        counts = Counter({l: n for l, n in counts.items() if n > 0})
        total = sum(counts.values())
        if total == 0:
            raise ValueError(f"{spec}: no training samples of languages {lang_filter or languages}")
        alpha = cfg.language_alpha
        weights = {l: n**alpha for l, n in counts.items()}
        z = sum(weights.values())
        mix = {l: w / z for l, w in sorted(weights.items())}
        rank_samples = cfg.epoch_samples or math.ceil(total / world_size)
        max_samples = int(round(cfg.max_seconds * SAMPLE_RATE)) if cfg.max_seconds else None
        log.info(
            "train mix (alpha=%g): %s; %d samples per rank and epoch",
            alpha,
            ", ".join(f"{l} {counts[l]} -> {p:.3f}" for l, p in mix.items()),
            rank_samples,
        )
    else:
        mix, rank_samples = {}, 0
        limit = EVAL_MAX_FACTOR * cfg.max_seconds if eval_max_seconds is None else eval_max_seconds
        max_samples = int(round(limit * SAMPLE_RATE)) if limit and limit > 0 else None
    full = replace(plain, shards=kept, rank_samples=rank_samples, mix=mix, max_samples=max_samples)
    return ShardLoader(full, skips if skips is not None else SkipCounter(), pre_skips)
