"""The shard format: WebDataset tar shards of `<key>.flac` + `<key>.json`, plus an `index.json` per directory.

This module owns writing shards (atomically, deterministically, on `lakd.io.TarShardWriter`), resolving
user data specs (directory, brace pattern, or a list of them) into shard paths, checking one sample's members
(`parse_sample`) and writing the per-directory index (reading it: `lakd.data.index.ShardIndex`).
"""

from __future__ import annotations

import glob
import io
import json
import lzma
import math
import os
import re
import tarfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from lakd.io import TarShardWriter, atomic_write_json, sha256_file

REQUIRED_FIELDS = ("emotion", "language", "speaker", "corpus", "split")
AUDIO_EXTS = ("flac", "wav")
INDEX_NAME = "index.json"
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class ShardFormatError(ValueError):
    """A shard, sample or index does not follow the lakd shard format; the message names the file."""


def check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ShardFormatError(
            f"sample key {key!r} must be non-empty and use only letters, digits, '_' and '-' (no dots)"
        )
    return key


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


class ShardWriter(TarShardWriter):
    """Writes samples into `{out_dir}/{prefix}-{NNNNNN}.tar`, `max_count` samples per shard.

    Each shard is written to a temporary file and renamed into place when complete (`lakd.io.TarShardWriter`),
    so a killed job never leaves a truncated shard behind. Use as a context manager; `close()` writes index.json.
    """

    def __init__(self, out_dir: str | os.PathLike, prefix: str, max_count: int = 200, write_index: bool = True):
        super().__init__(out_dir, prefix, max_count)
        self.write_index_on_close = write_index
        self._keys: set[str] = set()

    def write(
        self,
        key: str,
        meta: dict,
        audio: np.ndarray | None = None,
        sample_rate: int = 16_000,
        audio_bytes: bytes | None = None,
        audio_ext: str = "flac",
    ) -> None:
        """Add one sample: `audio` (float array) is encoded as 16-bit FLAC, or pass encoded `audio_bytes`."""
        check_key(key)
        if key in self._keys:
            raise ShardFormatError(f"duplicate sample key {key!r} in {self.directory}")
        missing = [f for f in REQUIRED_FIELDS if f not in meta]
        if missing:
            raise ShardFormatError(f"sample {key!r}: metadata lacks required fields {missing}")
        if audio_bytes is None:
            if audio is None:
                raise ValueError("pass audio or audio_bytes")
            audio = np.asarray(audio, dtype=np.float32)
            audio_bytes = encode_flac(audio, sample_rate)
            meta = {"sample_rate": sample_rate, "duration": round(len(audio) / sample_rate, 3), **meta}
        json_bytes = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()
        self.add_sample([(f"{key}.{audio_ext}", audio_bytes), (f"{key}.json", json_bytes)])
        self._keys.add(key)

    def close(self) -> None:
        self.finish_shard()
        if self.write_index_on_close:
            write_index(self.directory)


# ----------------------------------------------------------------------------- resolving data specs


def _expand_braces(pattern: str) -> list[str]:
    import braceexpand  # shipped with webdataset

    return list(braceexpand.braceexpand(pattern))


def expand_urls(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Resolve a data spec to a sorted list of shard paths.

    Accepts a directory (all `*.tar` in it), a brace pattern (`train/fi-{000000..000009}.tar`),
    a glob, a single tar path, or a list of any of these (comma-separated strings work too).
    """
    if isinstance(spec, (list, tuple)):
        out: list[str] = []
        for s in spec:
            out.extend(expand_urls(s))
        return out
    spec = str(spec)
    if "," in spec and not os.path.exists(spec):
        return expand_urls([s for s in spec.split(",") if s])
    if os.path.isdir(spec):
        paths = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if not paths:
            raise FileNotFoundError(f"{spec}: directory contains no .tar shards")
        return paths
    candidates = _expand_braces(spec) if "{" in spec else [spec]
    out = []
    for c in candidates:
        if any(ch in c for ch in "*?["):
            out.extend(sorted(glob.glob(c)))
        else:
            out.append(c)
    missing = [p for p in out if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"{spec}: shard(s) not found: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
        )
    if not out:
        raise FileNotFoundError(f"{spec}: matched no shards")
    return out


# ----------------------------------------------------------------------------- reading raw members


_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


def iter_tar_samples(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) for each sample of one shard, grouping consecutive members by key.

    A shard that cannot be opened or read to its end (random bytes, truncated, bad compression) raises
    ShardFormatError naming the file and how many samples came before; a missing file raises
    FileNotFoundError as usual.
    """
    current_key, current, n = None, {}, 0
    with open(path, "rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r:*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base = os.path.basename(member.name)
                    if "." not in base:
                        continue
                    key, ext = base.split(".", 1)
                    data = tar.extractfile(member).read()
                    if key != current_key and current_key is not None:
                        n += 1
                        yield current_key, current
                        current = {}
                    current_key = key
                    current[ext] = data
        except _TAR_ERRORS as e:
            detail = " ".join(str(e).split())[:200]
            raise ShardFormatError(f"{path}: unreadable tar after {n} samples ({type(e).__name__}: {detail})") from e
    if current_key is not None:
        yield current_key, current


def audio_duration(data: bytes) -> float:
    """Seconds of encoded FLAC/WAV audio from its header; AudioHeaderError when it has no usable header."""
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError... on bad bytes
        raise AudioHeaderError(f"audio header unreadable ({type(e).__name__}: {e})") from e
    if info.samplerate <= 0:
        raise AudioHeaderError(f"audio header has sample rate {info.samplerate}")
    return info.frames / info.samplerate


class AudioHeaderError(ValueError):
    """Encoded audio whose header cannot be read (see `audio_duration`)."""


# ----------------------------------------------------------------------------- one sample's metadata


class SampleError(ShardFormatError):
    """One sample breaks the format. `reason` is the loader's skip reason (missing_json, invalid_json,
    bad_metadata, missing_field, missing_audio), `detail` the loader's detail; the message says what is wrong."""

    def __init__(self, reason: str, problem: str, detail: str = ""):
        super().__init__(problem)
        self.reason, self.detail = reason, detail


_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class Sample:
    """A sample's parsed metadata and its audio member (still encoded)."""

    key: str
    meta: dict
    audio_ext: str | None  # "flac" or "wav"; None when the sample has no audio member
    audio: bytes | None
    members: tuple[str, ...]  # names of the sample's members (extensions)

    def require_audio(self) -> Sample:
        if self.audio_ext is None:
            raise SampleError("missing_audio", "no .flac or .wav member", f"members: {list(self.members)}")
        return self

    def duration(self) -> float:
        """Seconds: the metadata's `duration` (checked by parse_sample), else from the audio header.

        Raises SampleError (undecodable_audio) when it must come from a header that cannot be read."""
        seconds = self.meta.get("duration")
        if seconds is not None:
            return float(seconds)
        try:
            return audio_duration(self.require_audio().audio)
        except AudioHeaderError as e:
            raise SampleError("undecodable_audio", str(e), str(e)) from e


def _check_metadata(meta: dict) -> None:
    """The fields lakd reads must be plain values: identifiers are scalars, `duration` a finite number >= 0."""
    for field in REQUIRED_FIELDS:
        value = meta.get(field)
        if value is not None and not isinstance(value, _SCALARS):
            detail = f"{field!r} is a {type(value).__name__}, not a string"
            raise SampleError("bad_metadata", f"bad metadata ({detail})", detail)
    seconds = meta.get("duration")
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0
    ):
        detail = f"'duration' is {str(seconds)[:40]!r}, not a number of seconds >= 0"
        raise SampleError("bad_metadata", f"bad metadata ({detail})", detail)


def parse_sample(
    key: str, members: Mapping[str, bytes], required: Sequence[str] = (), require_audio: bool = True
) -> Sample:
    """The one check of a sample's members: JSON metadata that is an object, with the `required` fields,
    plain values where lakd reads them (`_check_metadata`), and (unless `require_audio=False`; then call
    `Sample.require_audio()` when it matters) an audio member.

    `members` maps extensions to bytes (`iter_tar_samples`, or a webdataset sample: `__`-keys are ignored).
    Raises SampleError naming the problem, and nothing else whatever the bytes (tests/test_fuzz.py).
    """
    if "json" not in members:
        raise SampleError("missing_json", "no .json member")
    raw = members["json"]
    if not isinstance(raw, (bytes, bytearray, str)):
        detail = f"the .json member is a {type(raw).__name__}"
        raise SampleError("invalid_json", f"invalid JSON metadata ({detail})", detail)
    try:
        meta = json.loads(raw)
    except RecursionError as e:  # '[[[[...' thousands deep: json gives up at Python's recursion limit
        detail = "JSON nested too deeply"
        raise SampleError("bad_metadata", f"bad metadata ({detail})", detail) from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise SampleError("invalid_json", f"invalid JSON metadata ({e})", str(e)) from e
    if not isinstance(meta, dict):
        detail = f"expected an object, got {type(meta).__name__}"
        raise SampleError("invalid_json", f"invalid JSON metadata ({detail})", detail)
    _check_metadata(meta)
    missing = [f for f in required if f not in meta]
    if missing:
        raise SampleError("missing_field", f"metadata lacks {missing}", f"lacks {missing}")
    ext = next((e for e in AUDIO_EXTS if e in members), None)
    names = tuple(sorted(str(k) for k in members if not str(k).startswith("__")))
    sample = Sample(key, meta, ext, members[ext] if ext else None, names)
    return sample.require_audio() if require_audio else sample


# ----------------------------------------------------------------------------- index.json (writing)


def summarize_shard(path: str | os.PathLike) -> dict:
    """Counts per language x emotion, sample count, duration and checksum of one shard."""
    counts: dict[str, Counter] = defaultdict(Counter)
    n, duration, speakers = 0, 0.0, set()
    for key, members in iter_tar_samples(path):
        try:
            sample = parse_sample(key, members)
            duration += sample.duration()
        except SampleError as e:
            raise ShardFormatError(f"{path}: sample {key!r} has {e}") from e
        meta = sample.meta
        counts[str(meta.get("language", "?"))][str(meta.get("emotion", "?"))] += 1
        speakers.add(str(meta.get("speaker", "?")))
        n += 1
    p = Path(path)
    return {
        "path": p.name,
        "num_samples": n,
        "duration_s": round(duration, 2),
        "bytes": p.stat().st_size,
        "sha256": sha256_file(p),
        "counts": {lang: dict(sorted(c.items())) for lang, c in sorted(counts.items())},
        "speakers": sorted(speakers),
    }


def write_index(directory: str | os.PathLike) -> dict:
    """(Re)build `index.json` for all shards of a directory and write it atomically."""
    directory = Path(directory)
    shards = [summarize_shard(p) for p in sorted(directory.glob("*.tar"))]
    if not shards:
        raise FileNotFoundError(f"{directory}: no .tar shards to index")
    counts: dict[str, Counter] = defaultdict(Counter)
    speakers: set[str] = set()
    for s in shards:
        speakers.update(s.pop("speakers"))
        for lang, c in s["counts"].items():
            counts[lang].update(c)
    index = {
        "format": "lakd-shards/1",
        "num_samples": sum(s["num_samples"] for s in shards),
        "duration_s": round(sum(s["duration_s"] for s in shards), 2),
        "bytes": sum(s["bytes"] for s in shards),
        "counts": {lang: dict(sorted(c.items())) for lang, c in sorted(counts.items())},
        "speakers": sorted(speakers),
        "shards": shards,
    }
    atomic_write_json(directory / INDEX_NAME, index)
    return index
