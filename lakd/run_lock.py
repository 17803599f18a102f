"""One writer per run directory: `lock_run_dir(dir)` holds an exclusive `flock` on `dir/run.lock`.

Two runs started into one directory used to corrupt each other (one deleted the other's staging directory,
the other resumed a foreign checkpoint). The run that writes a directory now holds its lock for as long as
it writes; a second gets `RunDirBusy` naming the holder (host, pid, SLURM job id, command, since when),
which the holder writes into the lock file once it has the lock.

Why flock: the kernel releases the lock when the holding process dies, however it dies (kill -9, OOM killer,
a preempted or requeued SLURM job), so a stale lock never blocks a resume and nothing has to be cleaned up.
Children that fork without exec (data-loader workers) would inherit the lock and keep it past their parent's
death; they close their copy right after the fork (`os.register_at_fork`), which leaves the parent's lock
alone. Across hosts the lock works where the file system supports flock (local disks, NFSv4; Lustre with
the `flock` mount option). The lock file stays after the run (its content is the last holder): what counts
is the kernel's lock, not the file.

Re-entrant within one process (a recipe and the trainer it calls both lock the same directory).
Bottom layer: imports nothing from lakd.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "run.lock"
STALE_WAIT_S = 10.0  # how long to wait for a lock whose holder (on this host) is already dead

_held: dict[str, list] = {}  # resolved directory -> [fd, depth]


class RunDirBusy(RuntimeError):
    """Another live process writes this run directory; the message names it."""


def _close_inherited_locks() -> None:
    for fd, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)  # only this child's reference: the parent's lock stays
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


def _job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _holder_record() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": _job_id(),
        "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
    }


def read_holder(directory: str | os.PathLike) -> dict | None:
    """What the lock file says about its (last) holder; None if it is empty or unreadable."""
    try:
        return json.loads((Path(directory) / LOCK_FILE).read_text() or "null")
    except (OSError, ValueError):
        return None


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process (it has not written its name yet)"
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('since')} "
        f"({holder.get('command') or '?'})"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_is_dead_here(holder: dict | None) -> bool:
    return bool(holder) and holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", 0)))


def _acquire(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    deadline = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
        holder = read_holder(directory)
        if _holder_is_dead_here(holder):  # its children may still hold the lock for a moment
            deadline = deadline or time.monotonic() + STALE_WAIT_S
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
        os.close(fd)
        raise RunDirBusy(
            f"{directory} is in use by another run: {describe_holder(holder)}. Wait for it to finish or stop it "
            f"(the lock is {path}, released when that process ends), or use another run directory"
        )
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_holder_record()) + "\n").encode(), 0)
    except OSError as e:  # e.g. a full disk: name the file
        os.close(fd)
        raise OSError(e.errno, e.strerror, str(path)) from e
    return fd


@contextlib.contextmanager
def lock_run_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold `directory`'s run lock (created if needed) for the block; RunDirBusy if another process holds it."""
    directory = Path(directory)
    key = str(directory.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield directory
        finally:
            _held[key][1] -= 1
        return
    fd = _acquire(directory)
    _held[key] = [fd, 1]
    try:
        yield directory
    finally:
        entry = _held.pop(key, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def holds_lock(directory: str | os.PathLike) -> bool:
    """Whether this process holds `directory`'s run lock."""
    return str(Path(directory).resolve()) in _held
