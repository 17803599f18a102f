"""What an importer finds: the Utterance record, the Scan result, and the layout helpers.

A corpus module only *finds* utterances (parses its corpus's layout into `Utterance` records);
labels, splits and shard writing are shared (see `importer.py`).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("lakd.corpora")


class CorpusLayoutError(FileNotFoundError):
    """The root does not look like the corpus (message says what was expected where)."""


class CorpusImportError(RuntimeError):
    """A strict import met a bad file (message names it)."""


@dataclass
class Utterance:
    """One source recording, as an importer found it."""

    path: Path  # audio file
    key: str  # unique sample key (letters, digits, '_' and '-')
    emotion: str  # canonical English name (anger, happiness, ..., calm, boredom) or the raw label
    speaker: str  # corpus-unique speaker id, prefixed with the corpus (e.g. "ravdess_07")
    language: str  # ISO code
    gender: str = "u"  # "f", "m" or "u"
    text: str | None = None
    group: str | None = None  # fold unit when it is not the speaker (IEMOCAP: session)
    split: str | None = None  # preassigned split (manifest only)
    extra: dict[str, Any] = field(default_factory=dict)  # corpus fields kept in the sample json


@dataclass(frozen=True)
class ScanContext:
    """What every corpus's scan is given: where to look and how to name what it finds."""

    root: Path  # the corpus root as the user gave it (a directory, or the manifest file)
    corpus: str  # prefix of sample keys and speaker ids, and of the shard names
    language: str | None  # ISO code for every utterance (None: the manifest's column says)
    labels: tuple[str, ...]  # the configured label set (a raw name equal to a label is kept as is)
    strict: bool  # a bad file met while scanning is an error instead of a counted skip


@dataclass
class Scan:
    """What an importer found under its root, before labels and splits are applied."""

    utterances: list[Utterance] = field(default_factory=list)
    excluded: Counter = field(default_factory=Counter)  # reason -> n (left out by the protocol)
    skipped: list[dict[str, str]] = field(default_factory=list)  # bad files met while scanning
    source_root: Path | None = None  # folder the sample json's `source` is relative to (default: the root)
    splits_given: bool = False  # every utterance has `split` from the corpus itself (a complete split column)


def skip(skipped: list[dict[str, str]], path: Path | str, reason: str, strict: bool) -> None:
    """Record a bad source file in `skipped`: an error under `strict`, else a counted, logged skip."""
    msg = f"{path}: {reason}"
    if strict:
        raise CorpusImportError(msg + " (strict mode; drop --strict to skip such files)")
    log.warning("skipping %s", msg)
    skipped.append({"path": str(path), "reason": reason})


def find_files(root: Path, pattern: re.Pattern, exts: Iterable[str] = (".wav",)) -> list[Path]:
    """All files under root whose *name* matches `pattern` (case-insensitive extensions), sorted.

    Hidden files (e.g. macOS `._name.wav` resource forks) are ignored.
    """
    exts = tuple(e.lower() for e in exts)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(exts):
                continue
            if pattern.match(name):
                out.append(Path(dirpath) / name)
    return sorted(out)


def require_dir(root: str | os.PathLike, corpus: str, expected: str) -> Path:
    """`root` as a Path, or a CorpusLayoutError saying what was expected there."""
    p = Path(root)
    if not p.is_dir():
        raise CorpusLayoutError(f"{corpus}: root {p} is not a directory (expected {expected})")
    return p
