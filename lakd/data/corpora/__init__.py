"""Corpus importers: real emotional-speech corpora -> speaker-independent lakd shards.

Each module has `prepare(root, out_dir, labels=..., fold=None, scheme="default", label_map=None,
shard_size=200, strict=False, seed=0, progress=None, ...) -> ImportSummary`; `import_corpus`
picks one by name. Layouts, label mappings and folds: docs/corpora.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from lakd.data.corpora import cafe, cremad, emodb, fesc, iemocap, manifest, ravdess
from lakd.data.corpora.summary import ImportSummary, count_rows
from lakd.data.corpora.utterances import CorpusImportError, CorpusLayoutError, Utterance
from lakd.data.corpora.writer import write_corpus

CORPORA: dict[str, Callable[..., ImportSummary]] = {
    "iemocap": iemocap.prepare,
    "fesc": fesc.prepare,
    "cafe": cafe.prepare,
    "ravdess": ravdess.prepare,
    "cremad": cremad.prepare,
    "emodb": emodb.prepare,
    "manifest": manifest.prepare,
}

DESCRIPTIONS = {
    "iemocap": "IEMOCAP (en): Session{1..5}/dialog/EmoEvaluation + sentences/wav; folds = sessions",
    "fesc": "FESC (fi): <speaker>/<emotion>/*.wav or labels.csv (lakd convention)",
    "cafe": "CaFE (fr): <Émotion>/<Faible|Fort>/AA-E-I-S.wav; folds = actor pairs",
    "ravdess": "RAVDESS (en): Actor_XX/03-01-EE-II-SS-RR-AA.wav; folds = 4 actors",
    "cremad": "CREMA-D (en): AudioWAV/1001_DFA_ANG_XX.wav; folds = actor-id blocks",
    "emodb": "EmoDB (de): wav/03a01Fa.wav; folds = speaker pairs",
    "manifest": "any corpus from a CSV/TSV manifest (path, emotion, language, speaker[, split, ...])",
}


def import_corpus(name: str, root: str | os.PathLike, out_dir: str | os.PathLike, **kwargs: Any) -> ImportSummary:
    """Import corpus `name` from `root` into shards under `out_dir` (kwargs go to its `prepare`)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}")
    return CORPORA[key](root, out_dir, **kwargs)


__all__ = [
    "CORPORA",
    "DESCRIPTIONS",
    "import_corpus",
    "ImportSummary",
    "Utterance",
    "CorpusLayoutError",
    "CorpusImportError",
    "write_corpus",
    "count_rows",
]
