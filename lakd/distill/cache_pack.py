"""Packing a teacher's cached knowledge into memory-mappable `.npy` files (reading them: `lakd.distill.cache`).

Beside a teacher's tar shards, `<teacher>/packed-*.npy` hold the same knowledge as flat arrays:

    packed-keys.npy    [N] fixed-width bytes, the sample keys sorted (found with np.searchsorted)
    packed-rows.npy    [N] int64, the row of each sorted key in the two arrays below
    packed-logits.npy  [N, C] float32, in the shards' order
    packed-pooled.npy  [N, H] float32

`TeacherCache` opens them with `np.load(..., mmap_mode="r")`, so a process holds only the pages it touches,
shared with every other process on the node through the page cache, instead of N x (C + H) x 4 bytes per
teacher of its own. Packing streams the shards once, one sample at a time (the keys alone are held in RAM,
~N x 100 bytes); each file goes to a temp file, is fsynced and renamed into place, and its sha256 is computed
from the bytes as written. The caller records the result in the manifest only after every file is in place.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.lib.format as npy_format

from lakd.distill.cache import PACKED_PARTS, CacheCorruptError, packed_name
from lakd.io import create_temp_file

_FLUSH_ROWS = 4096


class _HashedTemp:
    """A temp file beside `final` whose sha256 and size are computed from what is written."""

    def __init__(self, final: Path):
        self.final = final
        self.file: BinaryIO
        self.file, self.tmp = create_temp_file(final.parent, f".{final.name}.", ".tmp")
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.file.write(data)

    def header(self, shape: tuple[int, ...], descr: str) -> None:
        npy_format.write_array_header_1_0(self, {"descr": descr, "fortran_order": False, "shape": shape})

    def commit(self, out: Path) -> dict:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.final)
        return {"path": str(self.final.relative_to(out)), "sha256": self.sha.hexdigest(), "bytes": self.bytes}

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class PackedWriter:
    """Writes one teacher's packed files under `out/<name>/`: `add` rows in any order, then `finish()`.

    The row count and the widths are fixed up front (the `.npy` headers come first); `finish()` checks they
    were met, sorts the keys, renames every file into place and returns the manifest's `packed` record.
    Any failure (or `abort()`) removes the temp files; files already in place are never claimed by it.
    """

    def __init__(self, out: str | os.PathLike, name: str, num_samples: int, num_classes: int, hidden: int):
        self.out = Path(out)
        self.dir = self.out / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n, self.c, self.h = int(num_samples), int(num_classes), int(hidden)
        self.keys: list[bytes] = []
        self._buf: dict[str, list[bytes]] = {"logits": [], "pooled": []}
        self._files: dict[str, _HashedTemp] = {}
        try:
            for part, width in (("logits", self.c), ("pooled", self.h)):
                f = self._files[part] = _HashedTemp(self.dir / packed_name(part))
                f.header((self.n, width), "<f4")
        except BaseException:
            self.abort()
            raise

    def add(self, key: str, logits: np.ndarray, pooled: np.ndarray) -> None:
        """One sample; rows of several samples at once: `add_rows`."""
        self.add_rows([key], np.asarray(logits)[None], np.asarray(pooled)[None])

    def add_rows(self, keys: list[str], logits: np.ndarray, pooled: np.ndarray) -> None:
        logits, pooled = np.asarray(logits, dtype="<f4"), np.asarray(pooled, dtype="<f4")
        if logits.shape != (len(keys), self.c) or pooled.shape != (len(keys), self.h):
            raise CacheCorruptError(
                f"{self.dir}: rows of shape {logits.shape} and {pooled.shape}, expected [{len(keys)}, {self.c}] "
                f"and [{len(keys)}, {self.h}] (logits, pooled)"
            )
        if len(self.keys) + len(keys) > self.n:
            raise CacheCorruptError(f"{self.dir}: more than the {self.n} samples the manifest records")
        self.keys.extend(k.encode() for k in keys)
        self._buf["logits"].append(logits.tobytes())
        self._buf["pooled"].append(pooled.tobytes())
        if len(self._buf["logits"]) >= _FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        for part, chunks in self._buf.items():
            self._files[part].write(b"".join(chunks))
            chunks.clear()

    def finish(self) -> dict:
        """Sort the keys, put every file in place; the `packed` record {part: {path, sha256, bytes}}."""
        try:
            self._flush()
            if len(self.keys) != self.n:
                raise CacheCorruptError(f"{self.dir}: {len(self.keys)} samples packed, expected {self.n}")
            keys = np.array(self.keys, dtype=f"S{max(1, max(map(len, self.keys), default=1))}")
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            dup = np.flatnonzero(keys[1:] == keys[:-1])
            if dup.size:
                raise CacheCorruptError(f"{self.dir}: sample key {keys[dup[0]].decode()!r} occurs twice")
            for part, arr in (("keys", keys), ("rows", order.astype("<i8"))):
                f = self._files[part] = _HashedTemp(self.dir / packed_name(part))
                f.header(arr.shape, npy_format.dtype_to_descr(arr.dtype))
                f.write(arr.tobytes())
            return {part: self._files[part].commit(self.out) for part in PACKED_PARTS}
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        for f in self._files.values():
            if not f.file.closed:
                f.discard()


def _iter_shard(path: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(key, logits, pooled) of every `<key>.npz` in a cache shard, read as a stream."""
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".npz"):
                    continue
                with np.load(io.BytesIO(tar.extractfile(member).read())) as z:
                    yield member.name[:-4], z["logits"], z["pooled"]
    except (tarfile.TarError, OSError, ValueError, KeyError) as e:
        raise CacheCorruptError(f"{path}: unreadable cache shard ({e}); rerun `lakd cache`") from e


def pack_teacher(out: str | os.PathLike, name: str, shards: list[dict], num_samples: int, num_classes: int) -> dict:
    """Pack a teacher's finished tar shards (manifest `shards` records) into `packed-*.npy`; the `packed` record.

    The embedding width comes from the first sample; every sample must match it and `num_classes`.
    """
    out = Path(out)
    writer = None
    try:
        for shard in shards:
            for key, logits, pooled in _iter_shard(out / shard["path"]):
                if writer is None:
                    writer = PackedWriter(out, name, num_samples, num_classes, np.asarray(pooled).shape[-1])
                writer.add(key, logits, pooled)
        if writer is None:
            raise CacheCorruptError(f"{out / name}: no samples in the cache shards")
        return writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
