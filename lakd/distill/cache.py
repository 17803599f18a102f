"""Teacher-knowledge cache: run each frozen teacher once over the training shards, store logits + embeddings.

Layout (`out_dir`):

    manifest.json                      teachers, checkpoint hashes, data fingerprint, per-shard sha256 and size
    <teacher>/cache-000000.tar         per sample `<key>.npz` with float32 `logits [C]` and `pooled [H]`
    <teacher>/cache-000001.tar ...

This module holds the format (names, errors, fingerprints, the manifest) and reading (`TeacherCache`);
writing is `lakd.distill.cache_write.write_teacher_cache`, whose manifest never claims what is not on disk
(docs/guarantees.md). Teachers run on the eval view of the data (whole utterance, truncated like
evaluation), not on the random training crops: see docs/method.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
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


class TeacherCache:
    """All cached teacher knowledge in memory: per teacher a `[N, C]` logits and `[N, H_k]` embedding array.

    Memory is N x (C + H_k) x 4 bytes per teacher (100k utterances x 1024 dims ~ 0.4 GB per teacher),
    in every process that builds one. `teacher_dirs` (name -> checkpoint) selects and orders the teachers
    and checks each checkpoint's hash against the manifest; without it, all cached teachers in manifest order.
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
        self._logits: list[np.ndarray] = []
        self._pooled: list[np.ndarray] = []
        self._rows: list[dict[str, int]] = []
        for name in names:
            self._load_teacher(name, teachers[name], verify)

    def _load_teacher(self, name: str, entry: dict, verify: bool) -> None:
        logits, pooled, rows = [], [], {}
        for shard in entry["shards"]:
            path = self.dir / shard["path"]
            try:
                data = path.read_bytes()
            except OSError as e:
                raise CacheCorruptError(f"{path}: cannot read cache shard ({e})") from e
            if verify and hashlib.sha256(data).hexdigest() != shard["sha256"]:
                raise CacheCorruptError(
                    f"{path}: sha256 differs from {self.dir / MANIFEST}; the shard is corrupt, rerun `lakd cache`"
                )
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                    for member in tar:
                        if not member.isfile() or not member.name.endswith(".npz"):
                            continue
                        key = member.name[:-4]
                        with np.load(io.BytesIO(tar.extractfile(member).read())) as z:
                            rows[key] = len(logits)
                            logits.append(z["logits"])
                            pooled.append(z["pooled"])
            except (tarfile.TarError, OSError, ValueError, KeyError) as e:
                raise CacheCorruptError(f"{path}: unreadable cache shard ({e}); rerun `lakd cache`") from e
        if len(rows) != entry["num_samples"]:
            raise CacheCorruptError(
                f"{self.dir}/{name}: {len(rows)} samples in the shards, manifest says {entry['num_samples']}"
            )
        self._logits.append(np.stack(logits).astype(np.float32, copy=False))
        self._pooled.append(np.stack(pooled).astype(np.float32, copy=False))
        self._rows.append(rows)

    def __len__(self) -> int:
        return len(self._rows[0]) if self._rows else 0

    def __contains__(self, key: str) -> bool:
        return all(key in r for r in self._rows)

    @property
    def embed_dims(self) -> list[int]:
        return [p.shape[1] for p in self._pooled]

    def lookup(self, keys: Sequence[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Teacher logits `[K, B, C]` and embeddings (K tensors `[B, H_k]`), float32 on CPU, in teacher order."""
        logits, embeds = [], []
        for name, rows, lg, pl in zip(self.teacher_names, self._rows, self._logits, self._pooled):
            try:
                idx = np.fromiter((rows[k] for k in keys), dtype=np.int64, count=len(keys))
            except KeyError as e:
                raise CacheMissError(
                    f"sample key {e.args[0]!r} has no cached knowledge of teacher {name!r} in {self.dir} "
                    "(was the cache computed on other shards? rerun `lakd cache`)"
                ) from None
            logits.append(torch.from_numpy(lg[idx]))
            embeds.append(torch.from_numpy(pl[idx]))
        return torch.stack(logits), embeds

    def verify(self) -> dict:
        """Recompute every shard's sha256 against the manifest; raise CacheCorruptError listing the bad ones."""
        bad, checked = [], 0
        for name in self.manifest.get("teachers", {}):
            for shard in self.manifest["teachers"][name]["shards"]:
                path = self.dir / shard["path"]
                checked += 1
                if not path.exists():
                    bad.append(f"{path} (missing)")
                elif sha256_file(path) != shard["sha256"]:
                    bad.append(f"{path} (sha256 mismatch)")
        if bad:
            raise CacheCorruptError(f"{self.dir}: {len(bad)} of {checked} cache shards are corrupt: " + ", ".join(bad))
        return {"shards": checked, "ok": True}
