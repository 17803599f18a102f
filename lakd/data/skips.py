"""Bad data in the loader: the skip reasons, counting and logging skips, and strict mode's error.

Each bad sample is skipped, counted by reason and logged with its shard and key (or, with
`DataConfig.strict`, raises `BadSampleError`); see docs/data-loading.md#bad-data.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

from lakd.data.audio import MAX_PEAK, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

log = logging.getLogger("lakd.data")

MIN_SECONDS = 0.05  # shorter audio gives a wav2vec2-base model no frame to pool: skipped as "too_short"
LOG_FIRST = 20  # per reason and worker, the first skips are logged one by one; the rest are counted

SKIP_REASONS = {
    "missing_shard": "shard listed in index.json is not on disk (only with data.missing_shards=skip)",
    "corrupt_shard": "tar shard could not be read to its end (rest of the shard skipped)",
    "truncated_shard": "shard held fewer samples than its index.json entry says",
    "missing_json": "sample has no .json member",
    "invalid_json": "metadata is not a JSON object",
    "bad_metadata": "metadata nested too deeply, or a field lakd reads is not a plain value",
    "missing_field": "metadata lacks 'emotion' or 'language'",
    "missing_audio": "sample has no .flac or .wav member",
    "unknown_label": "emotion not in the configured labels",
    "unknown_language": "language not in the configured languages",
    "undecodable_audio": "audio bytes could not be decoded",
    "bad_sample_rate": f"sample rate outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz",
    "too_long": "audio longer than data.max_decoded_seconds",
    "empty_audio": "audio has no samples",
    "nonfinite_audio": "audio has NaN or inf samples",
    "out_of_range": f"audio has samples beyond ±{MAX_PEAK:g} (float audio lives in [-1, 1])",
    "silent_audio": "audio is all zeros",
    "too_short": f"audio shorter than {MIN_SECONDS} s",
    "nonfinite_output": "evaluation only: the model's probabilities for the sample are NaN or inf (not scored)",
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
        self._taken: Counter = Counter()

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

    def take_new(self) -> dict[str, int]:
        """Counts added since the previous call, by reason: what a batch carries as its `skipped` entry, so
        the counts travel with the data from DataLoader workers even when the consumer stops mid-epoch."""
        new = {r: n - self._taken[r] for r, n in self.counts.items() if n > self._taken[r]}
        self._taken.update(new)
        return dict(sorted(new.items()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: SkipCounter | dict) -> None:
        """Add the counts of another counter, its `as_dict()`, or `{"counts": take_new()}` (from a worker)."""
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
