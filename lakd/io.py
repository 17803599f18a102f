"""Files, the bottom layer: atomic writes, atomic directory swaps, and tar shards written whole.

Every file lakd writes for someone else to read goes through here, so a killed job never leaves a torn
file or a half-written shard behind: data goes to a hidden temporary file beside the target, is fsynced,
then renamed over it. Temporary files and directories are created with mode 0o666 / 0o777 and the kernel
applies the user's umask, so results get the permissions a plain `open()` would give them (e.g. 0o644
under umask 022), not `mkstemp`'s 0o600; `apply_umask` gives the same modes to files that other writers
(safetensors) create 0o600. (Reading the umask instead would mean setting it, which is process-wide and races
with other threads.)

This module imports nothing from lakd: every layer may use it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets
import shutil
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

_ATTEMPTS = 100


def _temp_name(directory: Path, prefix: str, suffix: str) -> Path:
    return directory / f"{prefix}{secrets.token_hex(4)}{suffix}"


def create_temp_file(directory: str | os.PathLike, prefix: str, suffix: str) -> tuple[BinaryIO, Path]:
    """A new, empty file `{directory}/{prefix}XXXXXXXX{suffix}` open for binary writing, mode 0o666 less umask."""
    directory = Path(directory)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_ATTEMPTS):
        path = _temp_name(directory, prefix, suffix)
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), path
    raise FileExistsError(f"{directory}: no free temporary name {prefix}XXXXXXXX{suffix}")


def create_temp_dir(beside: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new, empty hidden directory `.{name}.XXXXXXXX{suffix}` beside `beside`, mode 0o777 less umask.

    Beside the target means on the same file system, so `replace_dir` can rename it into place.
    """
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(_ATTEMPTS):
        path = _temp_name(beside.parent, f".{beside.name}.", suffix)
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{beside.parent}: no free temporary directory name for {beside.name}")


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122")


def disk_full_error(exc: BaseException, path: str | os.PathLike) -> OSError | None:
    """An OSError "[Errno 28] No space left on device: '<path>'" when `exc` or what caused it says the disk (or
    the quota) is full; None for any other error.

    Writers below Python report a full disk as their own error, without the path: torch.save raises
    "unexpected pos ..." with the OSError only as its context, safetensors says "os error 28" in its message.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = getattr(e, "errno", None)
        if code in _DISK_FULL or any(t in str(e).lower() for t in _DISK_FULL_TEXT):
            code = code if code in _DISK_FULL else errno.ENOSPC
            return OSError(code, os.strerror(code), str(path))
        e = e.__cause__ or e.__context__
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(fileobj)` on a temp file beside `path`, fsync, then rename: readers never see a torn file.

    On failure the temp file is removed; a full disk is raised as an OSError naming `path` (`disk_full_error`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f, tmp = create_temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = disk_full_error(e, path)
        if full is not None:
            raise full from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """`obj` as indented, key-sorted UTF-8 JSON with a final newline, written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())


def fsync_files(directory: str | os.PathLike) -> None:
    """fsync every regular file directly in `directory` (before a rename makes them visible)."""
    for p in Path(directory).iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def apply_umask(directory: str | os.PathLike) -> None:
    """Give every regular file directly in `directory` the mode a plain `open()` would give it under the
    current umask (0o666 less umask). For writers that ignore the umask: safetensors creates its files 0o600.
    The umask is read from a probe file created here (reading it with os.umask would set it, process-wide)."""
    directory = Path(directory)
    f, probe = create_temp_file(directory, ".umask-probe.", ".tmp")
    f.close()
    try:
        mode = probe.stat().st_mode & 0o777
    finally:
        probe.unlink(missing_ok=True)
    for p in directory.iterdir():
        if p.is_file() and not p.is_symlink() and p.stat().st_mode & 0o777 != mode:
            os.chmod(p, mode)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------- directory swaps


def backup_dir(final: str | os.PathLike) -> Path:
    """Where `replace_dir` keeps the previous `final` during a swap: `.{name}.old` beside it."""
    final = Path(final)
    return final.with_name(f".{final.name}.old")


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move the completed directory `src` to `dst`, replacing any existing `dst`, with two renames.

    The old `dst` is renamed to `backup_dir(dst)` first and deleted after `src` is in place, so at every
    moment one complete directory exists: `dst`, or (after a crash between the renames) the backup,
    which `resolve_dir` returns and the next `replace_dir` restores before swapping. `src` must be on
    the same file system (make it with `create_temp_dir(dst)` or beside `dst`).
    """
    src, dst = Path(src), Path(dst)
    old = backup_dir(dst)
    if not dst.exists() and old.exists():  # an earlier swap died between its renames: recover first
        os.replace(old, dst)
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old.exists() and not dst.exists():
            os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dst


def resolve_dir(final: str | os.PathLike) -> Path | None:
    """`final` if it exists, else the leftover of an interrupted `replace_dir`, else None."""
    final = Path(final)
    if final.exists():
        return final
    old = backup_dir(final)
    return old if old.exists() else None


# ------------------------------------------------------------------------------------- tar shards


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One regular-file member with fixed metadata (mtime/uid/gid 0, mode 0o644): reproducible bytes."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class TarShardWriter:
    """Writes samples (groups of tar members) into `{directory}/{prefix}-{NNNNNN}.tar`, `max_count` per shard.

    Each shard is written to a hidden temp file `.{prefix}.XXXXXXXX.tar.tmp` beside its final name,
    fsynced and renamed into place when full (or on `close()`), so a killed job never leaves a truncated
    shard. Subclasses add a sample format on top and may override `shard_finished`. Use as a context
    manager: a clean exit calls `close()`, an exception `abort()` (the unfinished shard is deleted).
    """

    def __init__(self, directory: str | os.PathLike, prefix: str, max_count: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_count = max_count
        self.shard_id = 0
        self.count_in_shard = 0
        self.total = 0
        self.paths: list[Path] = []
        self._file: BinaryIO | None = None
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None

    def add_sample(self, members: Iterable[tuple[str, bytes]]) -> None:
        """Add one sample's members (name, bytes) to the current shard; start the next when it is full."""
        if self._tar is None:
            self._file, self._tmp = create_temp_file(self.directory, f".{self.prefix}.", ".tar.tmp")
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        for name, data in members:
            add_tar_member(self._tar, name, data)
        self.count_in_shard += 1
        self.total += 1
        if self.count_in_shard >= self.max_count:
            self.finish_shard()

    def finish_shard(self) -> Path | None:
        """Complete the current shard (fsync, rename into place); None when no shard is open."""
        if self._tar is None:
            return None
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.directory / f"{self.prefix}-{self.shard_id:06d}.tar"
        os.replace(self._tmp, final)
        n = self.count_in_shard
        self.paths.append(final)
        self._file, self._tar, self._tmp = None, None, None
        self.shard_id += 1
        self.count_in_shard = 0
        self.shard_finished(final, n)
        return final

    def shard_finished(self, path: Path, num_samples: int) -> None:
        """Called after each shard is in place; the base class does nothing."""

    def close(self) -> None:
        self.finish_shard()

    def abort(self) -> None:
        """Drop the unfinished shard (completed shards stay)."""
        if self._tar is not None:
            try:
                self._tar.close()
                self._file.close()
            finally:
                self._tmp.unlink(missing_ok=True)
                self._file, self._tar, self._tmp = None, None, None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
