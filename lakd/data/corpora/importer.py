"""One importer for every corpus: a `CorpusSpec` says how to find a corpus's utterances and how
its speakers fall into folds; `prepare` does the rest the same way for all of them.

A corpus is data plus its layout parser: adding one means writing a `scan` and a `default_folds`
and listing its spec in `lakd.data.corpora.CORPORA`; options, labels, splits and shard writing
are not repeated per corpus.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakd import DEFAULT_LABELS
from lakd.data.corpora.folds import FoldsFn, fold_protocol
from lakd.data.corpora.labels import corpus_name, normalize_labels
from lakd.data.corpora.summary import ImportSummary
from lakd.data.corpora.utterances import CorpusLayoutError, Scan, ScanContext, Utterance, require_dir
from lakd.data.corpora.writer import ProgressFn, write_corpus
from lakd.data.splits import validate_speaker_splits


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus importer as data: its name, language, layout parser and default folds."""

    name: str
    language: str | None  # None: per utterance (a manifest's language column)
    scan: Callable[..., Scan]  # scan(ctx: ScanContext, **corpus options) -> Scan
    default_folds: FoldsFn
    description: str  # the layout expected under the root, quoted when the root does not match
    root_may_be_file: bool = False  # the root may be a file (a manifest); the scan checks it


def prepare(
    spec: CorpusSpec,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    labels: Iterable[str] = DEFAULT_LABELS,
    fold: int | str | None = None,
    scheme: str = "default",
    label_map: Mapping[str, str] | None = None,
    language: str | None = None,
    corpus: str | None = None,
    shard_size: int = 200,
    strict: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
    **options: Any,
) -> ImportSummary:
    """Import the corpus `spec` describes from `root` into speaker-independent shards under `out_dir`.

    scheme "default": the corpus's split column when it has a complete one (manifests), else its
    default folds (fold 1..n, default n: test = fold k, dev = fold k-1); "folds": the default folds
    even when a split column exists; "loso": one fold per speaker. `language` overrides the
    corpus's language (e.g. "fr-ca"), `corpus` its name (shard prefix, key and speaker prefix).
    `options` are the corpus's own scan options (IEMOCAP: `merge_excitement`).
    """
    name = corpus_name(corpus or spec.name)
    root = Path(root) if spec.root_may_be_file else require_dir(root, name, spec.description)
    labs = normalize_labels(labels)
    ctx = ScanContext(root=root, corpus=name, language=language or spec.language, labels=tuple(labs), strict=strict)
    found = spec.scan(ctx, **options)
    if not found.utterances:
        raise CorpusLayoutError(
            f"{name}: found no utterances under {root}; expected {spec.description}"
            + (f" ({len(found.skipped)} file(s) skipped)" if found.skipped else "")
        )
    if scheme == "default" and found.splits_given:
        by_split = {s: [u.speaker for u in found.utterances if u.split == s] for s in ("train", "dev", "test")}
        validate_speaker_splits(by_split, where=f"{name} split column in {root}")
        protocol: dict[str, Any] = {"scheme": "manifest", "column": "split"}

        def split_of(u: Utterance) -> str | None:
            return u.split

    else:
        folds = spec.default_folds(found.utterances, seed)
        split_of, protocol = fold_protocol(
            found.utterances, "default" if scheme == "folds" else scheme, fold, folds, name
        )
    return write_corpus(
        name,
        found.source_root or root,
        out_dir,
        found.utterances,
        split_of,
        labels=labs,
        label_map=label_map,
        shard_size=shard_size,
        strict=strict,
        seed=seed,
        progress=progress,
        protocol=protocol,
        excluded=found.excluded,
        skipped=found.skipped,
    )
