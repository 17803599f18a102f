"""Streaming loader: WebDataset shards -> padded batches of 16 kHz mono audio (see docs/data-loading.md).

Training streams one shuffled, cycling WebDataset pipeline per language and mixes them with temperature
sampling (p_l ~ n_l^alpha), so small languages are not drowned; an epoch is a fixed number of samples per
rank. Evaluation reads every sample exactly once across ranks and DataLoader workers, in a fixed order.
Bad data never crashes a run mid-epoch: each bad sample is skipped, counted by reason and logged with its
shard and key (or raises `BadSampleError` with `DataConfig.strict`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import torch
import webdataset as wds

from lakd import SAMPLE_RATE
from lakd.config import DataConfig
from lakd.data.audio import AudioDecodeError, audio_problem, decode_audio, to_mono_16k
from lakd.data.index import shard_entry
from lakd.data.shards import SampleError, expand_urls, iter_tar_samples, parse_sample

log = logging.getLogger("lakd.data")

MIN_SECONDS = 0.05  # shorter audio gives a wav2vec2-base model no frame to pool: skipped as "too_short"
EVAL_MAX_FACTOR = 2.0  # eval truncates to this many times cfg.max_seconds (default; see build_loader)
LOG_FIRST = 20  # per reason and worker, the first skips are logged one by one; the rest are counted

SKIP_REASONS = {
    "corrupt_shard": "tar shard could not be read to its end (rest of the shard skipped)",
    "truncated_shard": "shard held fewer samples than its index.json entry says",
    "missing_json": "sample has no .json member",
    "invalid_json": "metadata is not a JSON object",
    "missing_field": "metadata lacks 'emotion' or 'language'",
    "missing_audio": "sample has no .flac or .wav member",
    "unknown_label": "emotion not in the configured labels",
    "unknown_language": "language not in the configured languages",
    "undecodable_audio": "audio bytes could not be decoded",
    "empty_audio": "audio has no samples",
    "nonfinite_audio": "audio has NaN or inf samples",
    "silent_audio": "audio is all zeros",
    "too_short": f"audio shorter than {MIN_SECONDS} s",
}


class BadSampleError(ValueError):
    """Bad data met with `DataConfig.strict`; the message names the shard, key and reason.

    Constructible from the message alone, so it survives being re-raised from a DataLoader worker.
    """

    def __init__(self, message: str, *, shard: str | None = None, key: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.shard, self.key, self.reason = shard, key, reason


class SkipCounter:
    """Counts skipped samples per reason and logs each skip (the first `log_first` per reason one by one).

    A counter deduplicates repeats of the same (reason, shard, key), which happen when training cycles
    through a small language's shards more than once in an epoch. With `strict`, `add` raises instead.
    """

    def __init__(self, strict: bool = False, log_first: int = LOG_FIRST):
        self.strict = strict
        self.log_first = log_first
        self.counts: Counter = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)
        self._seen: set = set()
        self._logged: Counter = Counter()

    def add(self, reason: str, shard: str, key: str | None = None, detail: str = "", n: int = 1) -> None:
        where = f"{shard}:{key}" if key else str(shard)
        message = f"skipped {reason}: {where}" + (f" ({detail})" if detail else "")
        if self.strict:
            raise BadSampleError(f"bad data (data.strict=true): {message}", shard=shard, key=key, reason=reason)
        ident = (reason, str(shard), key)
        if ident in self._seen:
            return
        self._seen.add(ident)
        self.counts[reason] += n
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(where)
        self._logged[reason] += 1
        if self._logged[reason] <= self.log_first:
            log.warning(message)
            if self._logged[reason] == self.log_first:
                log.warning("further %s skips are counted, not logged one by one (see the epoch summary)", reason)
        else:
            log.debug(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: SkipCounter | dict) -> None:
        """Add the counts of another counter (or its `as_dict()`, e.g. from a DataLoader worker)."""
        d = other.as_dict() if isinstance(other, SkipCounter) else other
        for reason, n in d.get("counts", {}).items():
            self.counts[reason] += n
        for reason, ex in d.get("examples", {}).items():
            room = 5 - len(self.examples[reason])
            self.examples[reason].extend([e for e in ex if e not in self.examples[reason]][: max(room, 0)])

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "counts": dict(sorted(self.counts.items())),
            "examples": {r: list(v) for r, v in sorted(self.examples.items()) if v},
        }

    def summary(self) -> str:
        if not self.total:
            return "no samples skipped"
        parts = ", ".join(f"{r}={n}" for r, n in sorted(self.counts.items()))
        return f"{self.total} skipped ({parts})"

    def __repr__(self) -> str:
        return f"SkipCounter({self.summary()})"


# ----------------------------------------------------------------------------- what the shards hold


def _stable_seed(*parts) -> int:
    """A seed from values that is the same in every process (Python's str hash is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class ShardInfo:
    url: str
    languages: dict | None  # language -> samples; None when unknown (no index entry, not scanned)
    num_samples: int | None  # from index.json: used to detect shards that end early


_SCAN_CACHE: dict[tuple, dict] = {}


def _scan_languages(url: str) -> dict:
    """Language counts of a shard without an index entry, read from its JSON members (cached per process)."""
    st = os.stat(url)
    ck = (os.path.abspath(url), st.st_mtime_ns, st.st_size)
    if ck not in _SCAN_CACHE:
        counts: Counter = Counter()
        try:
            for key, members in iter_tar_samples(url):
                try:
                    sample = parse_sample(key, members, required=("language",), require_audio=False)
                except SampleError:
                    continue  # counted as a skip when the loader reads it
                counts[str(sample.meta["language"])] += 1
        except Exception as e:
            log.warning(
                "%s: shard is unreadable past %d samples while scanning languages (%s)", url, sum(counts.values()), e
            )
        if not counts:
            log.warning("%s: no sample with readable language metadata; the shard is not used", url)
        _SCAN_CACHE[ck] = dict(counts)
    return _SCAN_CACHE[ck]


def shard_infos(urls: Sequence[str], scan_missing: bool = False) -> list[ShardInfo]:
    """Per shard: language counts and sample count from the directory's index.json (ours or EmoSynth's).

    Shards missing from an index get `languages=None`, or scanned counts with `scan_missing`.
    """
    out, unscanned = [], []
    for u in urls:
        entry = shard_entry(u)
        if entry is not None and entry.languages is not None:
            out.append(ShardInfo(u, entry.languages, entry.num_samples))
        elif scan_missing:
            unscanned.append(u)
            out.append(ShardInfo(u, _scan_languages(u), None))
        else:
            out.append(ShardInfo(u, None, None))
    if unscanned:
        log.info(
            "no index.json entry for %d shard(s) (e.g. %s): scanned them for language counts; "
            "`lakd shards index DIR` avoids this",
            len(unscanned),
            unscanned[0],
        )
    return out


# ----------------------------------------------------------------------------- per-sample stages


@dataclass
class _Sample:
    key: str
    shard: str
    language: str
    language_id: int
    label: int
    speaker: str
    audio: bytes | torch.Tensor  # encoded bytes until decoded, then float32 [T] at 16 kHz
    ext: str = "flac"


class _WorkerReport:
    """End-of-stream marker a worker sends through the DataLoader carrying its skip counts."""

    def __init__(self, skips: dict):
        self.skips = skips


class _WorkerFailure:
    """A strict-mode BadSampleError sent as data: the main process raises it with the original message.

    (An exception raised inside a worker makes DataLoader's shutdown wait ~5 s per worker.)
    """

    def __init__(self, e: BadSampleError):
        self.args = (str(e),)
        self.kw = {"shard": e.shard, "key": e.key, "reason": e.reason}

    def error(self) -> BadSampleError:
        return BadSampleError(*self.args, **self.kw)


@dataclass
class _Spec:
    """Everything a worker needs, as plain picklable data."""

    shards: list  # list[ShardInfo] to read (already pruned to wanted languages where known)
    labels: list
    languages: list
    language_filter: list | None
    allow_unknown: bool
    cfg: DataConfig
    train: bool
    seed: int
    rank: int
    world_size: int
    epoch: int
    rank_samples: int  # training: samples per rank and epoch
    mix: dict  # training: language -> probability
    max_samples: int | None  # crop (train) / truncate (eval) length in samples; None = keep all


def _wanted_language(spec: _Spec, language: str) -> bool:
    if spec.language_filter is not None and language not in spec.language_filter:
        return False
    return language in spec.languages or spec.allow_unknown


def _read_shard(url: str, skips: SkipCounter, expected: int | None, report: bool = True) -> Iterator[dict]:
    """Raw samples of one shard via webdataset; a shard that breaks off is counted, never raised mid-epoch."""
    n = 0
    try:
        for raw in wds.tarfile_samples([dict(url=url)]):
            n += 1
            yield raw
    except Exception as e:
        msg = str(e.args[0]) if e.args else type(e).__name__
        if report or skips.strict:
            skips.add(
                "corrupt_shard", url, detail=f"{type(e).__name__}: {msg.split(' @ ')[0]}; {n} samples read before"
            )
        return
    if expected is not None and n < expected and (report or skips.strict):
        skips.add("truncated_shard", url, detail=f"{n} of {expected} samples", n=expected - n)


@dataclass
class _Rejected:
    """A sample that failed the metadata checks; the caller decides whether it counts it."""

    reason: str
    shard: str
    key: str
    detail: str = ""
    language: str | None = None

    def count(self, skips: SkipCounter) -> None:
        skips.add(self.reason, self.shard, self.key, self.detail)


def _parse(raw: dict, spec: _Spec, label_ids: dict, language_ids: dict) -> _Sample | _Rejected | None:
    """Metadata checks before any audio is decoded; None for samples of languages filtered out."""
    key = os.path.basename(raw.get("__key__", "?"))
    shard = raw.get("__url__", "?")
    try:
        sample = parse_sample(key, raw, required=("emotion", "language"), require_audio=False)
    except SampleError as e:
        return _Rejected(e.reason, shard, key, e.detail)
    meta = sample.meta
    language = str(meta["language"])
    if spec.language_filter is not None and language not in spec.language_filter:
        return None  # another run's language: not bad data, just not this run's
    if language not in language_ids and not spec.allow_unknown:
        return _Rejected("unknown_language", shard, key, f"{language!r} not in {list(spec.languages)}", language)
    label = label_ids.get(str(meta["emotion"]))
    if label is None:
        return _Rejected("unknown_label", shard, key, f"{meta['emotion']!r} not in {list(spec.labels)}", language)
    try:
        sample.require_audio()
    except SampleError as e:
        return _Rejected(e.reason, shard, key, e.detail, language)
    return _Sample(
        key=key,
        shard=shard,
        language=language,
        language_id=language_ids.get(language, -1),
        label=label,
        speaker=str(meta.get("speaker", "")),
        audio=sample.audio,
        ext=sample.audio_ext,
    )


def _decode(s: _Sample, skips: SkipCounter, max_samples: int | None, rng: random.Random | None) -> _Sample | None:
    """Decode, validate, convert to 16 kHz mono; random crop (rng given) or truncate to `max_samples`."""
    where = f"{s.shard}:{s.key}"
    try:
        audio, sr = decode_audio(s.audio, s.ext, where)
    except AudioDecodeError as e:
        skips.add("undecodable_audio", s.shard, s.key, str(e).split(": ", 1)[-1])
        return None
    problem = audio_problem(audio, sr, MIN_SECONDS)
    if problem:
        skips.add(problem, s.shard, s.key, f"{audio.shape[0]} frames at {sr} Hz")
        return None
    wav = to_mono_16k(audio, sr)
    if max_samples is not None and wav.numel() > max_samples:
        start = rng.randint(0, wav.numel() - max_samples) if rng is not None else 0
        wav = wav[start : start + max_samples].clone()
    return replace(s, audio=wav)


def collate(samples: list[_Sample]) -> dict:
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


def _batches(
    samples: Iterable[_Sample], batch_size: int, bucket: bool, bucket_buffer: int, rng: random.Random | None
) -> Iterator[dict]:
    """Plain batches in stream order, or length-bucketed: gather a buffer, sort by length, cut, shuffle order.

    The bucket size is a multiple of the batch size, so only the very last batch can be partial.
    """
    if not bucket:
        batch: list[_Sample] = []
        for s in samples:
            batch.append(s)
            if len(batch) == batch_size:
                yield collate(batch)
                batch = []
        if batch:
            yield collate(batch)
        return
    size = max(batch_size, (bucket_buffer // batch_size) * batch_size)

    def emit(buf: list[_Sample]) -> Iterator[dict]:
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


# ----------------------------------------------------------------------------- the dataset a worker iterates


class _ShardDataset(torch.utils.data.IterableDataset):
    """One epoch for one rank; each DataLoader worker takes its share (see docs/data-loading.md)."""

    def __init__(self, spec: _Spec):
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
            rng = random.Random(_stable_seed(spec.seed, spec.epoch, "batches", spec.rank, worker))
            batch_size = spec.cfg.batch_size
        else:
            samples = self._eval_samples(worker, num_workers, skips, label_ids, language_ids)
            rng, batch_size = None, spec.cfg.eval_batch_size
        try:
            yield from _batches(samples, batch_size, spec.cfg.bucket, spec.cfg.bucket_buffer, rng)
        except BadSampleError as e:
            yield _WorkerFailure(e)
            return
        yield _WorkerReport(skips.as_dict())

    # -- evaluation: every sample once, in a fixed order
    def _eval_samples(self, worker, num_workers, skips, label_ids, language_ids) -> Iterator[_Sample]:
        spec = self.spec
        urls = [s.url for s in spec.shards]
        expected = {s.url: s.num_samples for s in spec.shards}
        parts = spec.world_size * num_workers
        part = spec.rank + spec.world_size * worker
        if len(urls) >= parts:
            # whole shards: rank r takes shards r, r+R, ...; wds.split_by_worker deals those to workers
            mine = list(wds.split_by_worker(urls[spec.rank :: spec.world_size]))
            raw = (r for u in mine for r in _read_shard(u, skips, expected[u]))
        else:
            # fewer shards than readers: everyone reads everything and keeps sample i when i % parts == part
            raw = (
                r
                for i, r in enumerate(r for u in urls for r in _read_shard(u, skips, expected[u], report=part == 0))
                if i % parts == part
            )
        for r in raw:
            s = _parse(r, spec, label_ids, language_ids)
            if isinstance(s, _Rejected):
                s.count(skips)
            elif s is not None:
                s = _decode(s, skips, spec.max_samples, None)
                if s is not None:
                    yield s

    # -- training: per-language cycling streams, mixed by temperature sampling, fixed length
    def _language_stream(
        self, language: str, worker: int, num_workers: int, skips: SkipCounter, label_ids: dict, language_ids: dict
    ) -> Iterator[_Sample]:
        spec = self.spec
        shards = [s for s in spec.shards if s.languages and s.languages.get(language)]
        expected = {s.url: s.num_samples for s in spec.shards}
        # this stream counts problems of samples that are not its language only if it owns the shard
        owner = {s.url: min(l for l in s.languages if _wanted_language(spec, l)) == language for s in shards}
        urls = [s.url for s in shards]
        random.Random(_stable_seed(spec.seed, spec.epoch, "shards", language)).shuffle(urls)  # same on all ranks
        part = spec.rank + spec.world_size * worker
        if len(urls) >= spec.world_size * num_workers:
            mine = list(wds.split_by_worker(urls[spec.rank :: spec.world_size]))

            def source():
                for cycle in range(1 << 62):
                    order = list(mine)
                    random.Random(_stable_seed(spec.seed, spec.epoch, language, part, cycle)).shuffle(order)
                    yield from (dict(url=u) for u in order)
        else:
            # fewer shards than readers: resample shards (with replacement), deterministically per reader
            source = wds.ResampledShards(
                urls,
                seed=_stable_seed(spec.seed, spec.epoch, language) % (1 << 31),
                worker_seed=lambda: part,
                deterministic=True,
            )

        def samples(src):
            barren = 0
            for item in src:
                url = item["url"]
                good = 0
                for raw in _read_shard(url, skips, expected.get(url), report=owner[url]):
                    s = _parse(raw, spec, label_ids, language_ids)
                    if isinstance(s, _Rejected):
                        # counted by the stream of its language, or by the shard's owner if that is unknown
                        if s.language == language or (
                            owner[url] and (s.language is None or not _wanted_language(spec, s.language))
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
                    rng=random.Random(_stable_seed(spec.seed, spec.epoch, "buffer", language, part)),
                )
            )
        return iter(wds.DataPipeline(*stages))

    def _train_samples(self, worker, num_workers, skips, label_ids, language_ids) -> Iterator[_Sample]:
        spec = self.spec
        quota = worker_quota(spec.rank_samples, spec.cfg.batch_size, worker, num_workers)
        if quota == 0:
            return
        part = spec.rank + spec.world_size * worker
        streams = {l: self._language_stream(l, worker, num_workers, skips, label_ids, language_ids) for l in spec.mix}
        probs = dict(spec.mix)
        rng = random.Random(_stable_seed(spec.seed, spec.epoch, "mix", part))
        crop_rng = random.Random(_stable_seed(spec.seed, spec.epoch, "crop", part))
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
            s = _decode(s, skips, spec.max_samples, crop_rng)
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
            yield s


# ----------------------------------------------------------------------------- the public loader


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode/resample one sample at a time; threads would oversubscribe


class ShardLoader:
    """Iterable of batches for one rank. `len()` is the number of batches per epoch (exact for training,
    an upper bound from index.json for evaluation). Each pass over it is one epoch; the first uses the
    `epoch` given to build_loader and later passes count up (or `set_epoch`).
    """

    def __init__(self, spec: _Spec, skips: SkipCounter, pre_skips: list[tuple]):
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
        n = [sum(c for l, c in s.languages.items() if _wanted_language(spec, l)) for s in spec.shards]
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
        loader = torch.utils.data.DataLoader(
            _ShardDataset(spec),
            batch_size=None,
            num_workers=workers,
            worker_init_fn=_worker_init if workers > 0 else None,
            persistent_workers=False,
        )
        batches = samples = 0
        finished = False
        try:
            for item in loader:
                if isinstance(item, _WorkerReport):
                    skips.merge(item.skips)
                    continue
                if isinstance(item, _WorkerFailure):
                    raise item.error()
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
    plain = _Spec(
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
    infos = shard_infos(urls, scan_missing=train)
    kept, pre_skips = [], []
    for info in infos:
        if info.languages is None or any(_wanted_language(plain, l) for l in info.languages):
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
            counts.update({l: n for l, n in info.languages.items() if _wanted_language(plain, l)})
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
