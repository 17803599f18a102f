"""Any corpus described by a CSV/TSV manifest: one row per utterance.

Required columns: path, emotion, language, speaker (language may instead be given with
`language=`). Optional: split (train/dev/test; "val"/"valid"/"validation" mean dev), gender
(f/m/female/male...), text, key (or id). Every other column is kept in the sample json.
Relative paths are resolved against the manifest's folder. `root` is the manifest file, or a
folder holding manifest.csv / manifest.tsv / labels.csv / labels.tsv.

Splits: with a complete split column, it is used as given (and checked for shared speakers);
otherwise speakers are shuffled (seeded) per language into 5 folds, fold 5 = test, fold 4 = dev.
"""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from lakd import DEFAULT_LABELS
from lakd.data.corpora.importer import import_scan
from lakd.data.corpora.labels import canonical_emotion, corpus_name, sanitize_key
from lakd.data.corpora.summary import ImportSummary
from lakd.data.corpora.utterances import CorpusLayoutError, Scan, Utterance, log, skip
from lakd.data.corpora.writer import ProgressFn
from lakd.data.splits import contiguous_folds, natural_sorted, validate_speaker_splits

CORPUS = "manifest"
EXPECTED = "a CSV/TSV file with header columns path, emotion, language, speaker[, split, gender, text, ...]"
MANIFEST_NAMES = ("manifest.csv", "manifest.tsv", "labels.csv", "labels.tsv")
REQUIRED = ("path", "emotion", "speaker")
N_FOLDS = 5
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
    "eval": "test",
    "evaluation": "test",
}
GENDER_ALIASES = {"f": "f", "female": "f", "woman": "f", "w": "f", "m": "m", "male": "m", "man": "m"}


def find_manifest(root: str | os.PathLike) -> Path:
    p = Path(root)
    if p.is_file():
        return p
    if p.is_dir():
        for name in MANIFEST_NAMES:
            if (p / name).is_file():
                return p / name
        raise CorpusLayoutError(f"{p}: no manifest file ({', '.join(MANIFEST_NAMES)}); expected {EXPECTED}")
    raise CorpusLayoutError(f"manifest {p} does not exist; expected {EXPECTED}")


def _dialect(path: Path, sample: str):
    if path.suffix.lower() == ".tsv":
        return "excel-tab"
    if path.suffix.lower() == ".csv":
        return "excel"
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;")
    except csv.Error:
        return "excel"


def read_manifest(
    path: Path, corpus: str = CORPUS, language: str | None = None, labels: Iterable[str] = (), strict: bool = False
) -> tuple[Scan, bool]:
    """Parse a manifest into utterances; returns (scan, has_complete_split_column)."""
    result = Scan()
    labels = list(labels)
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    rows = csv.DictReader(text.splitlines(), dialect=_dialect(path, text[:4096]))
    header = [h.strip().lower() for h in (rows.fieldnames or [])]
    rows.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    if "language" not in header and not language:
        missing.append("language")
    if missing:
        raise CorpusLayoutError(f"{path}: manifest lacks column(s) {missing} (header: {header}); expected {EXPECTED}")
    has_split = "split" in header
    known = {"path", "emotion", "language", "speaker", "split", "gender", "text", "key", "id"}
    base = path.parent
    keys: set[str] = set()
    for line_no, row in enumerate(rows, start=2):
        row = {k: (v or "").strip() for k, v in row.items() if k}
        where = f"{path}:{line_no}"
        empty = [c for c in REQUIRED if not row.get(c)]
        lang = row.get("language") or language
        if not lang:
            empty.append("language")
        if empty:
            skip(result.skipped, where, f"row has empty {empty}", strict)
            continue
        audio = Path(row["path"])
        if not audio.is_absolute():
            audio = base / audio
        if not audio.is_file():
            skip(result.skipped, audio, f"audio file missing (listed at {where})", strict)
            continue
        split = None
        if has_split:
            split = SPLIT_ALIASES.get(row.get("split", "").lower())
            if split is None:
                if row.get("split"):
                    skip(result.skipped, where, f"unknown split {row['split']!r} (use train, dev or test)", strict)
                    continue
                if has_split:
                    log.warning("%s: empty split cell; ignoring the split column and using speaker folds", where)
                has_split = False  # an empty cell: the column does not define a complete split
        stem = row.get("key") or row.get("id") or os.path.splitext(row["path"])[0]
        key = sanitize_key(f"{corpus}_{stem}")
        if key in keys:
            skip(result.skipped, where, f"duplicate key {key!r}", strict)
            continue
        keys.add(key)
        extra = {k: v for k, v in row.items() if k not in known and v != ""}
        extra["emotion_raw"] = row["emotion"]
        result.utterances.append(
            Utterance(
                path=audio,
                key=key,
                emotion=canonical_emotion(row["emotion"], labels),
                speaker=row["speaker"],
                language=lang,
                gender=GENDER_ALIASES.get(row.get("gender", "").lower(), "u"),
                text=row.get("text") or None,
                split=split,
                extra=extra,
            )
        )
    return result, has_split


def assign_language_folds(utterances: list[Utterance], seed: int, n_folds: int = N_FOLDS) -> list[list[str]]:
    """Set `group` = "foldK" for every utterance: speakers shuffled (seeded) and chunked per language."""
    by_lang: dict[str, list[str]] = defaultdict(list)
    for spk, lang in sorted({(u.speaker, u.language) for u in utterances}):
        by_lang[lang].append(spk)
    n = max(3, min(n_folds, max(len(v) for v in by_lang.values())))
    fold_of: dict[str, str] = {}
    for lang, speakers in sorted(by_lang.items()):
        speakers = natural_sorted(speakers)
        random.Random(f"{seed}-{lang}").shuffle(speakers)
        chunks = contiguous_folds(speakers, min(n, len(speakers)), sort=False)
        offset = n - len(chunks)  # a language with few speakers fills the last (test/dev) folds first
        for i, chunk in enumerate(chunks):
            for s in chunk:
                fold_of[s] = f"fold{i + 1 + offset}"
    for u in utterances:
        u.group = fold_of[u.speaker]
    return [[f"fold{k}"] for k in range(1, n + 1)]


def prepare(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    labels: Iterable[str] = DEFAULT_LABELS,
    fold: int | str | None = None,
    scheme: str = "default",
    label_map: Mapping[str, str] | None = None,
    language: str | None = None,
    corpus: str = CORPUS,
    shard_size: int = 200,
    strict: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> ImportSummary:
    """Import a manifest. scheme "default" = its split column if complete, else 5 seeded speaker folds
    per language (fold 1..5, default 5); "folds" ignores the split column; "loso" = per speaker."""
    path = find_manifest(root)
    labels = list(labels)
    corpus = corpus_name(corpus)
    found, has_split = read_manifest(path, corpus=corpus, language=language, labels=labels, strict=strict)
    expected = f"rows in {path}"
    if found.utterances and scheme == "default" and has_split:
        by_split = {s: [u.speaker for u in found.utterances if u.split == s] for s in ("train", "dev", "test")}
        validate_speaker_splits(by_split, where=str(path))
        return import_scan(
            corpus,
            path.parent,
            out_dir,
            found,
            [],
            expected,
            labels=labels,
            fold=fold,
            scheme=scheme,
            label_map=label_map,
            shard_size=shard_size,
            strict=strict,
            seed=seed,
            progress=progress,
            split_of=lambda u: u.split,
            protocol={"scheme": "manifest", "column": "split"},
        )
    folds = assign_language_folds(found.utterances, seed) if found.utterances else []
    return import_scan(
        corpus,
        path.parent,
        out_dir,
        found,
        folds,
        expected,
        labels=labels,
        fold=fold,
        scheme="default" if scheme == "folds" else scheme,
        label_map=label_map,
        shard_size=shard_size,
        strict=strict,
        seed=seed,
        progress=progress,
    )
