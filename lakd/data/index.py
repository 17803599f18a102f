"""Reading `index.json`: what a directory of shards holds, without opening the shards.

`ShardIndex.load(directory)` is the one reader of the per-directory index (written by
`lakd.data.shards.write_index`, or by other generators such as EmoSynth-3's, which have no "format" key
and a per-language `speakers` mapping). Indexes are parsed once per process and content: a later load
is served from memory while the file's identity (inode, size, mtime, ctime) is unchanged; a file modified
within the last seconds before it was read is compared byte for byte instead (file times can be as coarse
as a clock tick), so a rewritten index is never served stale.

Shards that no index lists can be scanned for their languages instead (`scan_shard_languages`, cached
per process by path, size and mtime).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lakd.data.shards import INDEX_NAME, SampleError, ShardFormatError, iter_tar_samples, parse_sample

log = logging.getLogger("lakd.data")


@dataclass(frozen=True)
class ShardEntry:
    """One shard's entry of an index (fields the index lacks are None)."""

    path: str  # file name within the directory
    num_samples: int | None
    sha256: str | None
    counts: dict | None  # language -> {emotion: samples} (or language -> samples); None when absent

    @property
    def languages(self) -> dict[str, int] | None:
        """Samples per language; None when the entry has no counts."""
        if self.counts is None:
            return None
        return {lang: int(sum(c.values())) if isinstance(c, dict) else int(c) for lang, c in self.counts.items()}


class ShardIndex:
    """The parsed `index.json` of one directory of shards."""

    def __init__(self, directory: str | os.PathLike, data: dict):
        self.directory = Path(directory)
        self._data = data
        self.shards: dict[str, ShardEntry] = {}
        for s in data.get("shards") or []:
            if isinstance(s, dict) and "path" in s:
                counts = s.get("counts")
                self.shards[s["path"]] = ShardEntry(
                    path=s["path"],
                    num_samples=s.get("num_samples"),
                    sha256=s.get("sha256"),
                    counts=counts if isinstance(counts, dict) else None,
                )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ShardIndex | None:
        """The index of `directory`; None when it has no index.json. ShardFormatError if it is not valid JSON."""
        return _load(Path(directory))

    @classmethod
    def of_shard(cls, url: str | os.PathLike) -> ShardIndex | None:
        """The index of the directory that holds the shard `url`."""
        return cls.load(os.path.dirname(os.path.abspath(url)))

    # -- what the directory holds
    def data(self) -> dict:
        """A copy of the index as read (the JSON object)."""
        return copy.deepcopy(self._data)

    def entry(self, url: str | os.PathLike) -> ShardEntry | None:
        """The entry of a shard (a path or file name in this directory); None when the index lacks it."""
        return self.shards.get(os.path.basename(url))

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Samples per language and emotion over the whole directory."""
        return self._data.get("counts") or {}

    @property
    def languages(self) -> list[str]:
        return sorted(self.counts)

    @property
    def labels(self) -> list[str]:
        return sorted({label for c in self.counts.values() for label in c})

    @property
    def speakers(self) -> list[str]:
        """All speakers (a list in lakd's format; EmoSynth's per-language mapping is flattened)."""
        s = self._data.get("speakers") or []
        if isinstance(s, dict):
            return sorted({x for v in s.values() for x in v})
        return list(s)

    @property
    def num_samples(self) -> int | None:
        return self._data.get("num_samples")

    @property
    def duration_s(self) -> float | None:
        return self._data.get("duration_s")


_RACY_NS = 2_000_000_000  # an index modified less than this before it was read may change unseen by stat
_CACHE: dict[str, tuple[tuple, bytes, ShardIndex, bool]] = {}  # abspath -> (stat identity, bytes, index, racy)


def _load(directory: Path) -> ShardIndex | None:
    path = directory / INDEX_NAME
    key = os.path.abspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _CACHE.pop(key, None)
        return None
    ident = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == ident and not hit[3]:
        return hit[2]
    read_at = time.time_ns()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        _CACHE.pop(key, None)
        return None
    if hit is not None and hit[1] == raw:
        index = hit[2]
    else:
        try:
            data = json.loads(raw)
        except RecursionError as e:
            raise ShardFormatError(f"{path}: invalid JSON (nested too deeply)") from e
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise ShardFormatError(f"{path}: invalid JSON ({e})") from e
        if not isinstance(data, dict):
            raise ShardFormatError(f"{path}: invalid JSON (expected an object, got {type(data).__name__})")
        index = ShardIndex(os.path.dirname(key), data)
    racy = read_at - max(st.st_mtime_ns, st.st_ctime_ns) < _RACY_NS
    _CACHE[key] = (ident, raw, index, racy)
    return index


def shard_entry(url: str | os.PathLike) -> ShardEntry | None:
    """The index entry of one shard; None when its directory has no index or the index lacks it."""
    index = ShardIndex.of_shard(url)
    return index.entry(url) if index is not None else None


def read_index(directory: str | os.PathLike) -> dict | None:
    """The index.json of `directory` as a plain dict (a copy); None when there is none."""
    index = ShardIndex.load(directory)
    return index.data() if index is not None else None


def listed_but_absent(urls: Iterable[str]) -> list[tuple[str, ShardEntry]]:
    """(path, entry) of every shard that the index.json of a directory holding `urls` lists but the disk lacks.

    A directory spec is globbed from the disk, so such a shard would otherwise vanish from a run unnoticed.
    """
    out = []
    for d in sorted({os.path.dirname(os.path.abspath(u)) for u in urls}):
        index = ShardIndex.load(d)
        for name, entry in sorted((index.shards if index is not None else {}).items(), key=lambda kv: str(kv[0])):
            path = os.path.join(d, str(name))
            if not os.path.exists(path):
                out.append((path, entry))
    return out


def count_tar_samples(url: str | os.PathLike) -> int:
    return sum(1 for _ in iter_tar_samples(url))


def shard_sample_counts(urls: Iterable[str]) -> dict[str, int]:
    """Sample count per shard path, from the directories' index.json where present (else by scanning)."""
    out: dict[str, int] = {}
    for u in urls:
        entry = shard_entry(u)
        n = entry.num_samples if entry is not None else None
        out[u] = n if n is not None else count_tar_samples(u)
    return out


def directory_counts(urls: Iterable[str]) -> dict[str, Counter]:
    """Samples per language and emotion summed over the indexes of the directories holding `urls`
    (whole directories, each once; directories without an index add nothing)."""
    out: dict[str, Counter] = {}
    for d in sorted({os.path.dirname(os.path.abspath(u)) for u in urls}):
        index = ShardIndex.load(d)
        for lang, c in (index.counts if index is not None else {}).items():
            out.setdefault(lang, Counter()).update(c)
    return out


_SCAN_CACHE: dict[tuple, dict] = {}


def scan_shard_languages(url: str) -> dict:
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
