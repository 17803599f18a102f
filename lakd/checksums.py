"""Checksums of a checkpoint directory: `checksums.json` beside the files, written with them, verified on load.

A checkpoint that was damaged after it was written (a bad disk block, a truncated copy, random bytes inside
`model.safetensors`) often still loads: safetensors reads whatever bytes are there, so a corrupted teacher
would quietly compute a wrong cache. `write_checksums(dir)` records the sha256 of every file in the
directory (recursively, e.g. `deepspeed/`), atomically, as the last file of the checkpoint (before the
directory is renamed into place); `verify_checksums(dir)` recomputes them and raises `ChecksumError` naming
the first file that differs or is missing. A directory without `checksums.json` (written before lakd
recorded them) loads with a warning, once per directory and process.

Bottom layer (imports only lakd.io): models and the training engine use it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from lakd.io import atomic_write_json, sha256_file

log = logging.getLogger("lakd.checksums")

CHECKSUMS_FILE = "checksums.json"
_warned: set[str] = set()


class ChecksumError(ValueError):
    """A file of a checkpoint does not match the checksum written with it (or is missing)."""


def _files(directory: Path) -> list[str]:
    out = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel != CHECKSUMS_FILE and not name.startswith("."):  # hidden: temp files of an atomic write
                out.append(Path(rel).as_posix())
    return out


def write_checksums(directory: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file under `directory` into `directory/checksums.json` (atomically); returns them."""
    directory = Path(directory)
    sums = {rel: sha256_file(directory / rel) for rel in _files(directory)}
    atomic_write_json(directory / CHECKSUMS_FILE, {"algorithm": "sha256", "files": sums})
    return sums


def verify_checksums(directory: str | os.PathLike) -> bool:
    """Check every file listed in `directory/checksums.json`: True when all match, False (with a warning)
    when the directory has no checksums.json; ChecksumError naming the file otherwise. Files not listed
    (added later by hand) are not checked."""
    directory = Path(directory)
    path = directory / CHECKSUMS_FILE
    if not path.exists():
        if str(directory) not in _warned:
            _warned.add(str(directory))
            log.warning("%s: no %s (written by an older lakd): its files are not verified", directory, CHECKSUMS_FILE)
        return False
    try:
        record = json.loads(path.read_text())
        files = record["files"]
        if record.get("algorithm") != "sha256" or not isinstance(files, dict):
            raise ValueError("not a sha256 checksum list")
    except (ValueError, KeyError, TypeError) as e:
        raise ChecksumError(f"{path}: unreadable ({e}); the checkpoint cannot be verified") from e
    for rel, expected in files.items():
        file = directory / rel
        if not file.is_file():
            raise ChecksumError(f"{file}: missing (listed in {CHECKSUMS_FILE}); the checkpoint is incomplete")
        if sha256_file(file) != expected:
            raise ChecksumError(
                f"{file}: corrupted (its sha256 differs from the one written with the checkpoint); "
                "restore it from a copy or retrain"
            )
    return True
