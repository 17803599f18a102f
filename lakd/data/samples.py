"""One sample on its way through the loader: read from a shard, checked, decoded to 16 kHz mono.

`check_sample` applies the shard format's checks (`lakd.data.shards.parse_sample`) and the run's labels
and languages before any audio is decoded; `decode_sample` decodes, validates and crops. Problems become
skips (`lakd.data.skips`), never exceptions mid-epoch.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import webdataset as wds

from lakd.data.audio import AudioDecodeError, audio_problem, decode_audio, describe_problem, to_mono_16k
from lakd.data.plan import ReadSpec
from lakd.data.shards import SampleError, parse_sample
from lakd.data.skips import MIN_SECONDS, SkipCounter


@dataclass
class LabeledSample:
    """A sample that passed the metadata checks, with label and language as indices of the run's lists."""

    key: str
    shard: str
    language: str
    language_id: int
    label: int
    speaker: str
    audio: bytes | torch.Tensor  # encoded bytes until decoded, then float32 [T] at 16 kHz
    ext: str = "flac"


def read_shard(url: str, skips: SkipCounter, expected: int | None, report: bool = True) -> Iterator[dict]:
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
class Rejected:
    """A sample that failed the metadata checks; the caller decides whether it counts it."""

    reason: str
    shard: str
    key: str
    detail: str = ""
    language: str | None = None

    def count(self, skips: SkipCounter) -> None:
        skips.add(self.reason, self.shard, self.key, self.detail)


def check_sample(raw: dict, spec: ReadSpec, label_ids: dict, language_ids: dict) -> LabeledSample | Rejected | None:
    """Metadata checks before any audio is decoded; None for samples of languages filtered out."""
    key = os.path.basename(raw.get("__key__", "?"))
    shard = raw.get("__url__", "?")
    try:
        sample = parse_sample(key, raw, required=("emotion", "language"), require_audio=False)
    except SampleError as e:
        return Rejected(e.reason, shard, key, e.detail)
    meta = sample.meta
    language = str(meta["language"])
    if spec.language_filter is not None and language not in spec.language_filter:
        return None  # another run's language: not bad data, just not this run's
    if language not in language_ids and not spec.allow_unknown:
        return Rejected("unknown_language", shard, key, f"{language!r} not in {list(spec.languages)}", language)
    label = label_ids.get(str(meta["emotion"]))
    if label is None:
        return Rejected("unknown_label", shard, key, f"{meta['emotion']!r} not in {list(spec.labels)}", language)
    try:
        sample.require_audio()
    except SampleError as e:
        return Rejected(e.reason, shard, key, e.detail, language)
    return LabeledSample(
        key=key,
        shard=shard,
        language=language,
        language_id=language_ids.get(language, -1),
        label=label,
        speaker=str(meta.get("speaker", "")),
        audio=sample.audio,
        ext=sample.audio_ext,
    )


def decode_sample(
    s: LabeledSample,
    skips: SkipCounter,
    max_samples: int | None,
    rng: random.Random | None,
    max_decoded_seconds: float | None = None,
) -> LabeledSample | None:
    """Decode, validate, convert to 16 kHz mono; random crop (rng given) or truncate to `max_samples`.

    Every problem is a counted skip naming the sample (lakd.data.skips.SKIP_REASONS): undecodable bytes,
    a sample rate outside the bounds, more than `max_decoded_seconds`, empty, non-finite, out-of-range,
    silent or too short audio. What comes out is finite and within ±MAX_PEAK.
    """
    where = f"{s.shard}:{s.key}"
    try:
        audio, sr = decode_audio(s.audio, s.ext, where, max_decoded_seconds)
    except AudioDecodeError as e:
        skips.add(e.reason, s.shard, s.key, str(e).split(": ", 1)[-1])
        return None
    problem = audio_problem(audio, sr, MIN_SECONDS)
    if problem:
        skips.add(problem, s.shard, s.key, describe_problem(problem, audio, sr))
        return None
    wav = to_mono_16k(audio, sr)
    if max_samples is not None and wav.numel() > max_samples:
        start = rng.randint(0, wav.numel() - max_samples) if rng is not None else 0
        # a copy, so the full decoded clip is freed; numpy's, which never spawns intra-op threads (see to_mono_16k)
        wav = torch.from_numpy(wav.numpy()[start : start + max_samples].copy())
    return replace(s, audio=wav)
