"""Corpus importers: real emotional-speech corpora -> speaker-independent lakd shards.

Each corpus module describes its corpus as data (`SPEC`: name, language, layout parser, default
folds, expected layout); `prepare` in `importer.py` imports any of them the same way and
`import_corpus` picks one by name. Layouts, label mappings and folds: docs/corpora.md.
"""

from __future__ import annotations

import os
from typing import Any

from lakd.data.corpora import cafe, cremad, emodb, fesc, iemocap, manifest, ravdess
from lakd.data.corpora.importer import CorpusSpec, prepare
from lakd.data.corpora.summary import ImportSummary, count_rows
from lakd.data.corpora.utterances import CorpusImportError, CorpusLayoutError, Utterance
from lakd.data.corpora.writer import write_corpus

CORPORA: dict[str, CorpusSpec] = {
    spec.name: spec
    for spec in (iemocap.SPEC, fesc.SPEC, cafe.SPEC, ravdess.SPEC, cremad.SPEC, emodb.SPEC, manifest.SPEC)
}


def import_corpus(name: str, root: str | os.PathLike, out_dir: str | os.PathLike, **kwargs: Any) -> ImportSummary:
    """Import corpus `name` from `root` into shards under `out_dir` (kwargs go to `prepare`)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}")
    return prepare(CORPORA[key], root, out_dir, **kwargs)


__all__ = [
    "CORPORA",
    "CorpusSpec",
    "import_corpus",
    "prepare",
    "ImportSummary",
    "Utterance",
    "CorpusLayoutError",
    "CorpusImportError",
    "write_corpus",
    "count_rows",
]
