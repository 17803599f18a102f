"""What one DataLoader worker iterates in one epoch (see docs/data-loading.md#ranks-and-workers).

Evaluation reads every sample exactly once across ranks and workers, in shard order. Training runs one
shuffled, cycling WebDataset pipeline per language and mixes them by temperature sampling to a fixed
number of samples. Each batch carries the worker's new skip counts (`batch["skipped"]`) and a worker ends its
stream with a `WorkerReport` of the rest (or a `WorkerFailure` in strict mode); the loader in the main process
merges them.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import torch
import webdataset as wds

from lakd.data.augment import Augmenter
from lakd.data.batching import batches, worker_quota
from lakd.data.plan import ReadSpec, wanted_language
from lakd.data.samples import LabeledSample, Rejected, check_sample, decode_sample, read_shard
from lakd.data.skips import BadSampleError, SkipCounter

log = logging.getLogger("lakd.data")


def stable_seed(*parts) -> int:
    """A seed from values that is the same in every process (Python's str hash is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


class WorkerReport:
    """End-of-stream marker a worker sends through the DataLoader: the skip counts since its last batch and
    examples of skipped samples. Each batch carries the counts since the batch before (`batch["skipped"]`),
    so a consumer that stops after its last batch (the trainer) still has every count of what it read."""

    def __init__(self, skips: dict):
        self.skips = skips


class WorkerFailure:
    """A strict-mode BadSampleError sent as data: the main process raises it with the original message.

    (An exception raised inside a worker makes DataLoader's shutdown wait ~5 s per worker.)
    """

    def __init__(self, e: BadSampleError):
        self.args = (str(e),)
        self.kw = {"shard": e.shard, "key": e.key, "reason": e.reason}

    def error(self) -> BadSampleError:
        return BadSampleError(*self.args, **self.kw)


class ShardDataset(torch.utils.data.IterableDataset):
    """One epoch for one rank; each DataLoader worker takes its share (see docs/data-loading.md)."""

    def __init__(self, spec: ReadSpec):
        super().__init__()
        self.spec = spec

    def __iter__(self) -> Iterator:
        spec = self.spec
        _, _, worker, num_workers = wds.utils.pytorch_worker_info()
        skips = SkipCounter(strict=spec.cfg.strict)
        label_ids = {name: i for i, name in enumerate(spec.labels)}
        language_ids = {code: i for i, code in enumerate(spec.languages)}
        if spec.train:
            samples = self._train_samples(worker, num_workers, skips, label_ids, language_ids)
            rng = random.Random(stable_seed(spec.seed, spec.epoch, "batches", spec.rank, worker))
            batch_size = spec.cfg.batch_size
        else:
            samples = self._eval_samples(worker, num_workers, skips, label_ids, language_ids)
            rng, batch_size = None, spec.cfg.eval_batch_size
        try:
            for batch in batches(samples, batch_size, spec.cfg.bucket, spec.cfg.bucket_buffer, rng):
                batch["skipped"] = skips.take_new()  # counts travel with the data (see WorkerReport)
                yield batch
        except BadSampleError as e:
            yield WorkerFailure(e)
            return
        yield WorkerReport({**skips.as_dict(), "counts": skips.take_new()})

    # -- evaluation: every sample once, in a fixed order
    def _eval_samples(self, worker, num_workers, skips, label_ids, language_ids) -> Iterator[LabeledSample]:
        spec = self.spec
        urls = [s.url for s in spec.shards]
        expected = {s.url: s.num_samples for s in spec.shards}
        parts = spec.world_size * num_workers
        part = spec.rank + spec.world_size * worker
        if len(urls) >= parts:
            # whole shards: rank r takes shards r, r+R, ...; wds.split_by_worker deals those to workers
            mine = list(wds.split_by_worker(urls[spec.rank :: spec.world_size]))
            raw = (r for u in mine for r in read_shard(u, skips, expected[u]))
        else:
            # fewer shards than readers: everyone reads everything and keeps sample i when i % parts == part
            raw = (
                r
                for i, r in enumerate(r for u in urls for r in read_shard(u, skips, expected[u], report=part == 0))
                if i % parts == part
            )
        for r in raw:
            s = check_sample(r, spec, label_ids, language_ids)
            if isinstance(s, Rejected):
                s.count(skips)
            elif s is not None:
                s = decode_sample(s, skips, spec.max_samples, None, spec.cfg.max_decoded_seconds)
                if s is not None:
                    yield s

    # -- training: per-language cycling streams, mixed by temperature sampling, fixed length
    def _language_stream(
        self, language: str, worker: int, num_workers: int, skips: SkipCounter, label_ids: dict, language_ids: dict
    ) -> Iterator[LabeledSample]:
        spec = self.spec
        shards = [s for s in spec.shards if s.languages and s.languages.get(language)]
        expected = {s.url: s.num_samples for s in spec.shards}
        # this stream counts problems of samples that are not its language only if it owns the shard
        owner = {s.url: min(l for l in s.languages if wanted_language(spec, l)) == language for s in shards}
        urls = [s.url for s in shards]
        random.Random(stable_seed(spec.seed, spec.epoch, "shards", language)).shuffle(urls)  # same on all ranks
        part = spec.rank + spec.world_size * worker
        if len(urls) >= spec.world_size * num_workers:
            mine = list(wds.split_by_worker(urls[spec.rank :: spec.world_size]))

            def source():
                for cycle in range(1 << 62):
                    order = list(mine)
                    random.Random(stable_seed(spec.seed, spec.epoch, language, part, cycle)).shuffle(order)
                    yield from (dict(url=u) for u in order)
        else:
            # fewer shards than readers: resample shards (with replacement), deterministically per reader
            source = wds.ResampledShards(
                urls,
                seed=stable_seed(spec.seed, spec.epoch, language) % (1 << 31),
                worker_seed=lambda: part,
                deterministic=True,
            )

        def samples(src):
            barren = 0
            for item in src:
                url = item["url"]
                good = 0
                for raw in read_shard(url, skips, expected.get(url), report=owner[url]):
                    s = check_sample(raw, spec, label_ids, language_ids)
                    if isinstance(s, Rejected):
                        # counted by the stream of its language, or by the shard's owner if that is unknown
                        if s.language == language or (
                            owner[url] and (s.language is None or not wanted_language(spec, s.language))
                        ):
                            s.count(skips)
                    elif s is not None and s.language == language:
                        good += 1
                        yield s
                barren = 0 if good else barren + 1
                if barren > 2 * len(urls) + 8:
                    log.error(
                        "language %r: %d shard reads in a row gave no usable sample (e.g. %s); "
                        "dropping it from the mix",
                        language,
                        barren,
                        url,
                    )
                    return

        bufsize = max(1, spec.cfg.shuffle_buffer // max(1, len(spec.mix)))
        stages = [source, samples]
        if bufsize > 1:
            stages.append(
                wds.shuffle(
                    bufsize,
                    initial=min(100, bufsize),
                    rng=random.Random(stable_seed(spec.seed, spec.epoch, "buffer", language, part)),
                )
            )
        return iter(wds.DataPipeline(*stages))

    def _train_samples(self, worker, num_workers, skips, label_ids, language_ids) -> Iterator[LabeledSample]:
        spec = self.spec
        quota = worker_quota(spec.rank_samples, spec.cfg.batch_size, worker, num_workers)
        if quota == 0:
            return
        part = spec.rank + spec.world_size * worker
        streams = {l: self._language_stream(l, worker, num_workers, skips, label_ids, language_ids) for l in spec.mix}
        probs = dict(spec.mix)
        rng = random.Random(stable_seed(spec.seed, spec.epoch, "mix", part))
        crop_rng = random.Random(stable_seed(spec.seed, spec.epoch, "crop", part))
        augmenter = Augmenter(spec.cfg.augment, spec.max_samples)  # training crops only, never evaluation
        fails: Counter = Counter()
        per_language: Counter = Counter()
        for info in spec.shards:
            per_language.update(info.languages or {})
        emitted = 0
        while emitted < quota:
            if not probs:
                raise RuntimeError(
                    f"no usable training samples left in any language of {len(spec.shards)} shards "
                    f"(e.g. {spec.shards[0].url}); skips so far: {skips.summary()}"
                )
            langs = sorted(probs)
            language = rng.choices(langs, weights=[probs[l] for l in langs])[0]
            try:
                s = next(streams[language])
            except StopIteration:
                del probs[language]
                continue
            s = decode_sample(s, skips, spec.max_samples, crop_rng, spec.cfg.max_decoded_seconds)
            if s is None:
                fails[language] += 1
                if fails[language] > max(100, 2 * per_language[language]):
                    log.error(
                        "language %r: %d samples in a row had unusable audio; dropping it from the mix",
                        language,
                        fails[language],
                    )
                    del probs[language]
                continue
            fails[language] = 0
            emitted += 1
            if augmenter.active:  # seeded per sample: the same augmentation whatever the worker count
                s = replace(
                    s, audio=augmenter.apply(s.audio, s.key, stable_seed(spec.seed, spec.epoch, "augment", s.key))
                )
            yield s
