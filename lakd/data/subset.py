"""A low-resource copy of a split: some languages cut to a fraction of their samples, the others kept whole.

Why: to ask what language-balanced mixing and distillation do for a language with little data, the same corpus
is needed with one language made scarce (`lakd shards subset`). The cut is stratified per (language, emotion)
so the class balance of the language is kept, and deterministic for a seed: a sample is kept when its
sha256(seed, key) rank within its (language, emotion) group is below ceil(fraction × group size). Audio and
metadata bytes are copied unchanged (no re-encoding), into shards named like the source's (`{language}-NNNNNN.tar`),
with a fresh index.json and a SUBSET.json that says what was cut from what. The result appears complete or not
at all: it is written beside the destination and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from pathlib import Path

from lakd.data.shards import ShardFormatError, ShardWriter, expand_urls, iter_tar_samples, write_index
from lakd.io import atomic_write_json, create_temp_dir, replace_dir


class SubsetError(ValueError):
    """A subset request that cannot be met (bad fraction, unknown language, destination in use)."""


def parse_keep(items: list[str]) -> dict[str, float]:
    """["fi=0.1", "fr=0.5"] -> {"fi": 0.1, "fr": 0.5}; each fraction in (0, 1]."""
    keep: dict[str, float] = {}
    for item in items:
        lang, sep, value = item.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = float("nan")
        if not sep or not lang or not 0 < fraction <= 1:
            raise SubsetError(f"--keep {item!r}: expected LANGUAGE=FRACTION with 0 < FRACTION <= 1, e.g. fi=0.1")
        keep[lang] = fraction
    return keep


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()


def _meta(members: dict[str, bytes], key: str, path: str) -> dict:
    try:
        meta = json.loads(members["json"])
        meta["language"], meta["emotion"]
    except (KeyError, TypeError, ValueError) as e:
        raise ShardFormatError(f"{path}: sample {key!r} has no readable language and emotion ({e!r})") from e
    return meta


def _audio_member(members: dict[str, bytes], key: str, path: str) -> tuple[str, bytes]:
    audio = [(ext, data) for ext, data in members.items() if ext != "json"]
    if len(audio) != 1 or "json" not in members:
        raise ShardFormatError(f"{path}: sample {key!r} must have one audio member and one .json")
    return audio[0]


def subset_split(src, dst: str | os.PathLike, keep: dict[str, float], seed: int = 0, max_count: int = 200) -> dict:
    """Copy the split `src` (a data spec) to the directory `dst` with `keep`'s languages cut; returns SUBSET.json."""
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise SubsetError(f"{dst} exists and is not empty: choose a new directory")
    urls = expand_urls(src)
    groups: dict[tuple[str, str], list[tuple[bytes, str]]] = defaultdict(list)
    for url in urls:  # first pass: which keys each (language, emotion) group has
        for key, members in iter_tar_samples(url):
            meta = _meta(members, key, url)
            groups[(meta["language"], meta["emotion"])].append((_rank(seed, key), key))
    languages = {lang for lang, _ in groups}
    unknown = sorted(set(keep) - languages)
    if unknown:
        raise SubsetError(f"--keep names {unknown}, not in {src} (its languages: {sorted(languages)})")
    kept: set[str] = set()
    counts: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for (lang, emotion), ranked in groups.items():
        n = len(ranked) if lang not in keep else math.ceil(keep[lang] * len(ranked))
        kept.update(key for _, key in sorted(ranked)[:n])
        counts[lang][emotion] = [n, len(ranked)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp_dir(dst)
    writers: dict[str, ShardWriter] = {}
    try:
        for url in urls:  # second pass: copy the kept samples' bytes
            for key, members in iter_tar_samples(url):
                if key not in kept:
                    continue
                meta = _meta(members, key, url)
                lang = meta["language"]
                if lang not in writers:
                    writers[lang] = ShardWriter(tmp, lang, max_count=max_count, write_index=False)
                ext, audio = _audio_member(members, key, url)
                writers[lang].write(key, meta, audio_bytes=audio, audio_ext=ext)
        for w in writers.values():
            w.finish_shard()
        write_index(tmp)
        record = {"source": [str(u) for u in urls], "keep": keep, "seed": seed, "counts": counts}
        atomic_write_json(tmp / "SUBSET.json", record)
        replace_dir(tmp, dst)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record
