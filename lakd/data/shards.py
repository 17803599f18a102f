"""The shard format: WebDataset tar shards of `<key>.flac` + `<key>.json`, plus an `index.json` per directory.

This module owns writing shards (atomically, deterministically, on `lakd.io.TarShardWriter`), resolving user data specs
(directory, brace pattern, or a list of them) into shard paths, and the per-directory index.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
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


def iter_tar_samples(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) for each sample of one shard, grouping consecutive members by key."""
    current_key, current = None, {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            if "." not in base:
                continue
            key, ext = base.split(".", 1)
            data = tar.extractfile(member).read()
            if key != current_key and current_key is not None:
                yield current_key, current
                current = {}
            current_key = key
            current[ext] = data
    if current_key is not None:
        yield current_key, current


def audio_duration(data: bytes) -> float:
    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate


def summarize_shard(path: str | os.PathLike) -> dict:
    """Counts per language x emotion, sample count, duration and checksum of one shard."""
    counts: dict[str, Counter] = defaultdict(Counter)
    n, duration, speakers = 0, 0.0, set()
    for key, members in iter_tar_samples(path):
        if "json" not in members:
            raise ShardFormatError(f"{path}: sample {key!r} has no .json member")
        try:
            meta = json.loads(members["json"])
        except json.JSONDecodeError as e:
            raise ShardFormatError(f"{path}: sample {key!r} has invalid JSON metadata ({e})") from e
        audio_ext = next((e for e in AUDIO_EXTS if e in members), None)
        if audio_ext is None:
            raise ShardFormatError(f"{path}: sample {key!r} has no .flac or .wav member")
        dur = meta.get("duration")
        duration += float(dur) if dur is not None else audio_duration(members[audio_ext])
        counts[meta.get("language", "?")][meta.get("emotion", "?")] += 1
        speakers.add(meta.get("speaker", "?"))
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


def read_index(directory: str | os.PathLike) -> dict | None:
    p = Path(directory) / INDEX_NAME
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ShardFormatError(f"{p}: invalid JSON ({e})") from e


def shard_sample_counts(urls: Iterable[str]) -> dict[str, int]:
    """Sample count per shard path, from the directories' index.json where present (else by scanning)."""
    out: dict[str, int] = {}
    by_dir: dict[str, dict] = {}
    for u in urls:
        d = os.path.dirname(os.path.abspath(u))
        if d not in by_dir:
            by_dir[d] = {s["path"]: s["num_samples"] for s in (read_index(d) or {}).get("shards", [])}
        n = by_dir[d].get(os.path.basename(u))
        out[u] = n if n is not None else sum(1 for _ in iter_tar_samples(u))
    return out
