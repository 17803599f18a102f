"""Teacher-knowledge cache: run each frozen teacher once over the training shards, store logits + embeddings.

Layout (`out_dir`):

    manifest.json                      teachers, checkpoint hashes, data fingerprint, per-shard sha256 and size
    <teacher>/cache-000000.tar         per sample `<key>.npz` with float32 `logits [C]` and `pooled [H]`
    <teacher>/cache-000001.tar ...
    <teacher>/packed-{keys,rows,logits,pooled}.npy   the same knowledge as flat arrays, memory-mapped by readers

This module holds the format (names, errors, fingerprints, the manifest) and reading (`TeacherCache`);
writing is `lakd.distill.cache_write.write_teacher_cache` (packing: `lakd.distill.cache_pack`), whose manifest
never claims what is not on disk (docs/guarantees.md). Teachers run on the eval view of the data (whole
utterance, truncated like evaluation), not on the random training crops: see docs/method.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from lakd.data.index import shard_entry
from lakd.data.shards import expand_urls
from lakd.io import sha256_file

log = logging.getLogger("lakd.distill.cache")

MANIFEST = "manifest.json"
FORMAT = "lakd-teacher-cache/1"
SHARD_PREFIX = "cache"
CHECKPOINT_FILES = (
    "config.json",
    "lakd.json",
    "lakd_head.safetensors",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
)


class CacheError(RuntimeError):
    """The teacher cache cannot be used as asked; the message names the cache directory."""


class CacheMissError(CacheError, LookupError):
    """A sample key has no cached teacher knowledge."""


class CacheMismatchError(CacheError):
    """A teacher checkpoint differs from the one the cache was computed with."""


class CacheCorruptError(CacheError):
    """A cache shard does not match its recorded checksum or cannot be read."""


# ----------------------------------------------------------------------------- fingerprints


def checkpoint_hash(directory: str | os.PathLike) -> str:
    """sha256 over a model directory's weight files, config.json and lakd.json (names and contents)."""
    d = Path(directory)
    files = (
        sorted(p for p in d.iterdir() if p.name in CHECKPOINT_FILES or (p.suffix == ".safetensors" and p.is_file()))
        if d.is_dir()
        else []
    )
    if not any(p.name == "lakd.json" for p in files):
        raise CacheError(f"teacher checkpoint {d}: not a lakd model directory (no lakd.json)")
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def data_fingerprint(spec, labels: Sequence[str], languages: Sequence[str], eval_max_seconds: float | None) -> dict:
    """What the cached knowledge depends on besides the teacher: shards (by index sha256, else size+mtime),
    label and language order, and the eval truncation."""
    shards = []
    for url in expand_urls(spec):
        entry = shard_entry(url)
        if entry is not None and entry.sha256:
            ident = f"sha256:{entry.sha256}"
        else:
            st = os.stat(url)
            ident = f"size:{st.st_size}:mtime:{st.st_mtime_ns}"
        shards.append([os.path.basename(url), ident])
    fp = {"shards": shards, "labels": list(labels), "languages": list(languages), "eval_max_seconds": eval_max_seconds}
    fp["hash"] = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
    return fp


def teacher_language(name: str, languages: Sequence[str]) -> str | None:
    """A teacher named after a language teaches that language; any other name (e.g. 'multi') teaches all."""
    return name if name in languages else None


# ----------------------------------------------------------------------------- the manifest


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    p = Path(out_dir) / MANIFEST
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text())
    except (ValueError, RecursionError) as e:
        raise CacheError(f"{p}: invalid JSON ({e}); delete the cache directory to rebuild it") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        found = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise CacheError(f"{p}: format {found!r}, this lakd reads {FORMAT!r}")
    return m


# ----------------------------------------------------------------------------- reading

PACKED_PARTS = ("keys", "rows", "logits", "pooled")


def packed_name(part: str) -> str:
    """File name of a packed array beside a teacher's shards (written by `lakd.distill.cache_pack`)."""
    return f"packed-{part}.npy"


def packed_problem(out: Path, entry: dict, check_sha256: bool = False) -> str | None:
    """Why a manifest entry's packed files cannot be used as recorded (not packed, missing, another size, and
    with `check_sha256` another content); None if they can."""
    packed = entry.get("packed")
    if not packed or any(part not in packed for part in PACKED_PARTS):
        return "not packed (written by an older lakd)"
    for part in PACKED_PARTS:
        path = out / packed[part]["path"]
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path} is missing"
        if size != packed[part]["bytes"]:
            return f"{path} has {size} bytes, the manifest says {packed[part]['bytes']}"
        if check_sha256 and sha256_file(path) != packed[part]["sha256"]:
            return f"{path}: sha256 differs from the manifest"
    return None


class _Teacher:
    """One teacher's packed arrays, memory-mapped: sorted keys, their rows, logits [N, C], pooled [N, H]."""

    def __init__(self, out: Path, name: str, entry: dict, num_classes: int, verify: bool):
        problem = packed_problem(out, entry)
        if problem is not None:
            raise CacheCorruptError(
                f"{out}: teacher {name!r}'s packed knowledge cannot be read: {problem}; rerun `lakd cache` "
                "(it packs the shards again, nothing is recomputed)"
            )
        arrays = {}
        for part in PACKED_PARTS:
            record = entry["packed"][part]
            path = out / record["path"]
            if verify and sha256_file(path) != record["sha256"]:  # in 1 MiB chunks: RSS stays flat
                raise CacheCorruptError(
                    f"{path}: sha256 differs from {out / MANIFEST}; the packed file is corrupt, rerun `lakd cache`"
                )
            try:
                arrays[part] = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as e:  # a torn header raises what its parser raises (ValueError, TokenError, ...)
                raise CacheCorruptError(f"{path}: unreadable packed cache file ({e}); rerun `lakd cache`") from e
        n = entry["num_samples"]
        expected = {"keys": (n,), "rows": (n,), "logits": (n, num_classes), "pooled": (n, entry.get("hidden_size"))}
        kinds = {"keys": "S", "rows": "i", "logits": "f", "pooled": "f"}
        for part, arr in arrays.items():
            shape = expected[part] if expected[part][-1] is not None else (n, arr.shape[-1])
            if arr.shape != shape or arr.dtype.kind != kinds[part]:
                raise CacheCorruptError(
                    f"{out / entry['packed'][part]['path']}: array {arr.dtype}{list(arr.shape)}, the manifest says "
                    f"{list(shape)} ({kinds[part]}); rerun `lakd cache`"
                )
        self.name = name
        self.language = entry.get("language")
        self.scope = entry.get("scope", "all")  # own-language: knowledge of the samples of `covers` only
        self.covers = entry.get("covers") or ([self.language] if self.scope != "all" else None)
        self.keys_id = entry["packed"]["keys"]["sha256"]
        self.keys, self.rows = arrays["keys"], arrays["rows"]
        self.logits, self.pooled = arrays["logits"], arrays["pooled"]

    def search(self, query: np.ndarray) -> tuple[np.ndarray, int | None]:
        """Positions of the (encoded) keys `query` in the sorted keys, and the index of the first one absent."""
        if not len(self.keys):
            return np.zeros(len(query), np.int64), (0 if len(query) else None)
        pos = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        absent = np.flatnonzero(self.keys[pos] != query)
        return pos, (int(absent[0]) if absent.size else None)


def _encode_keys(keys: Sequence[str]) -> np.ndarray:
    return np.array([k.encode() for k in keys], dtype=bytes) if len(keys) else np.zeros(0, "S1")


class TeacherCache:
    """Cached teacher knowledge, memory-mapped: per teacher `[N, C]` logits and `[N, H_k]` embeddings on disk.

    The packed `.npy` files (`lakd.distill.cache_pack`) are opened with `mmap_mode="r"`: a process's own
    (anonymous) memory does not grow with N, and the file pages it touches are shared with every other process
    on the node through the page cache (reclaimable; see docs/method.md, "Memory"). Keys are found by binary
    search in a sorted, memory-mapped key array, not a dict. `teacher_dirs` (name -> checkpoint) selects and
    orders the teachers and checks each checkpoint's hash against the manifest; without it, all cached
    teachers in manifest order. `verify` hashes every packed file (in chunks) against the manifest first.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        teacher_dirs: Mapping[str, str | os.PathLike] | None = None,
        verify: bool = True,
    ):
        self.dir = Path(out_dir)
        manifest = read_manifest(self.dir)
        if manifest is None:
            raise CacheError(f"{self.dir}: no {MANIFEST} (run `lakd cache` first)")
        self.manifest = manifest
        teachers = manifest.get("teachers", {})
        names = list(teacher_dirs) if teacher_dirs is not None else list(manifest.get("order", teachers))
        for name in names:
            entry = teachers.get(name)
            if entry is None or not entry.get("complete"):
                raise CacheError(
                    f"{self.dir}: teacher {name!r} is not cached (cached: {sorted(teachers)}); run `lakd cache`"
                )
            if teacher_dirs is not None:
                now = checkpoint_hash(teacher_dirs[name])
                if now != entry["checkpoint_hash"]:
                    raise CacheMismatchError(
                        f"{self.dir}: teacher {name!r} at {teacher_dirs[name]} has hash {now[:16]}..., "
                        f"but the cache was computed with {entry['checkpoint_hash'][:16]}... "
                        f"({entry.get('checkpoint')}); rerun `lakd cache`"
                    )
        self.teacher_names: list[str] = names
        self.teacher_languages: list[str | None] = [teachers[n].get("language") for n in names]
        self.labels: list[str] = list(manifest["labels"])
        self._teachers = [_Teacher(self.dir, n, teachers[n], len(self.labels), verify) for n in names]

    def __len__(self) -> int:
        """Samples with cached knowledge: a teacher's of all languages, else the own-language teachers' together."""
        whole = [len(t.keys) for t in self._teachers if t.scope == "all"]
        return whole[0] if whole else sum(len(t.keys) for t in self._teachers)

    def __contains__(self, key: str) -> bool:
        query = _encode_keys([key])
        whole = [t.search(query)[1] is None for t in self._teachers if t.scope == "all"]
        own = [t.search(query)[1] is None for t in self._teachers if t.scope != "all"]
        return all(whole) and (any(own) or not own)

    @property
    def embed_dims(self) -> list[int]:
        return [t.pooled.shape[1] for t in self._teachers]

    def lookup(
        self, keys: Sequence[str], languages: Sequence[str] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Teacher logits `[K, B, C]` and embeddings (K tensors `[B, H_k]`), float32 on CPU, in teacher order.

        `languages` (the samples' language codes) is needed with own-language teachers: their rows for samples of
        a language they do not cover are zeros, which route weighting gives weight 0 (lakd.distill.cache_write:
        `_covers`; own-language caches are refused with cosine weightings).
        """
        query = _encode_keys(keys)
        found: dict[str, np.ndarray] = {}  # teachers with the same sorted keys share one search
        logits, embeds = [], []
        for t in self._teachers:
            if t.scope == "own-language":
                own = np.arange(len(keys)) if languages is None else np.flatnonzero(np.isin(languages, t.covers))
                logit_rows = np.zeros((len(keys), t.logits.shape[1]), np.float32)
                pooled_rows = np.zeros((len(keys), t.pooled.shape[1]), np.float32)
                if own.size:
                    pos, absent = t.search(query[own])
                    if absent is not None:
                        raise self._miss(keys[own[absent]], t, languages is None)
                    rows = np.asarray(t.rows[pos], dtype=np.int64)
                    logit_rows[own], pooled_rows[own] = t.logits[rows], t.pooled[rows]
                logits.append(torch.from_numpy(logit_rows))
                embeds.append(torch.from_numpy(pooled_rows))
                continue
            pos = found.get(t.keys_id)
            if pos is None:
                pos, absent = t.search(query)
                if absent is not None:
                    raise self._miss(keys[absent], t, False)
                found[t.keys_id] = pos
            rows = np.asarray(t.rows[pos], dtype=np.int64)  # each teacher's own row order
            logits.append(torch.from_numpy(np.array(t.logits[rows], dtype=np.float32)))
            embeds.append(torch.from_numpy(np.array(t.pooled[rows], dtype=np.float32)))
        return torch.stack(logits), embeds

    def _miss(self, key: str, t: _Teacher, no_languages: bool) -> CacheMissError:
        if no_languages:
            return CacheMissError(
                f"sample key {key!r} has no cached knowledge of teacher {t.name!r} in {self.dir}, which holds the "
                f"samples of {', '.join(t.covers)} only: pass the samples' languages to lookup()"
            )
        return CacheMissError(
            f"sample key {key!r} has no cached knowledge of teacher {t.name!r} in {self.dir} "
            "(was the cache computed on other shards? rerun `lakd cache`)"
        )

    def verify(self) -> dict:
        """Recompute every shard's and packed file's sha256 against the manifest (in chunks); raise
        CacheCorruptError listing the bad ones."""
        bad, checked = [], {"shards": 0, "packed": 0}
        for entry in self.manifest.get("teachers", {}).values():
            records = [("shards", r) for r in entry["shards"]]
            records += [("packed", r) for r in (entry.get("packed") or {}).values()]
            for kind, record in records:
                path = self.dir / record["path"]
                checked[kind] += 1
                if not path.exists():
                    bad.append(f"{path} (missing)")
                elif sha256_file(path) != record["sha256"]:
                    bad.append(f"{path} (sha256 mismatch)")
        if bad:
            total = sum(checked.values())
            raise CacheCorruptError(f"{self.dir}: {len(bad)} of {total} cache files are corrupt: " + ", ".join(bad))
        return {**checked, "ok": True}
