"""Importing a scanned corpus: apply the fold protocol and write the shards."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lakd.data.corpora.folds import fold_protocol
from lakd.data.corpora.summary import ImportSummary
from lakd.data.corpora.utterances import CorpusLayoutError, Scan, Utterance
from lakd.data.corpora.writer import ProgressFn, write_corpus


def import_scan(
    corpus: str,
    root: Path,
    out_dir: str | os.PathLike,
    scan: Scan,
    default_folds: Sequence[Sequence[str]],
    expected: str,
    *,
    labels: Iterable[str] | None,
    fold: int | str | None,
    scheme: str,
    label_map: Mapping[str, str] | None,
    shard_size: int,
    strict: bool,
    seed: int,
    progress: ProgressFn | None,
    split_of: Callable[[Utterance], str | None] | None = None,
    protocol: Mapping[str, Any] | None = None,
) -> ImportSummary:
    """Apply the fold protocol (unless `split_of` is given) and write the shards."""
    if not scan.utterances:
        raise CorpusLayoutError(
            f"{corpus}: found no utterances under {root}; expected {expected}"
            + (f" ({len(scan.skipped)} file(s) skipped)" if scan.skipped else "")
        )
    if split_of is None:
        split_of, protocol = fold_protocol(scan.utterances, scheme, fold, default_folds, corpus)
    return write_corpus(
        corpus,
        root,
        out_dir,
        scan.utterances,
        split_of,
        labels=labels,
        label_map=label_map,
        shard_size=shard_size,
        strict=strict,
        seed=seed,
        progress=progress,
        protocol=protocol,
        excluded=scan.excluded,
        skipped=scan.skipped,
    )
