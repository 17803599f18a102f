"""Any corpus described by a CSV/TSV manifest: one row per utterance.

Required columns: path, emotion, language, speaker (language may instead be given with
`language=`). Optional: split (train/dev/test; "val"/"valid"/"validation" mean dev), gender
(f/m/female/male...), text, key (or id). Every other column is kept in the sample json.
Relative paths are resolved against the manifest's folder. `root` is the manifest file, or a
folder holding manifest.csv / manifest.tsv / labels.csv / labels.tsv.

Splits: with a complete split column, it is used as given (and checked for shared speakers);
otherwise (or with scheme "folds") speakers are shuffled (seeded) per language into 5 folds,
fold 5 = test, fold 4 = dev. `corpus=` names the corpus (shard prefix and json `corpus`).
"""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from lakd.data.corpora.importer import CorpusSpec
from lakd.data.corpora.labels import canonical_emotion, canonical_gender, sanitize_key
from lakd.data.corpora.utterances import CorpusLayoutError, Scan, ScanContext, Utterance, log, skip
from lakd.data.splits import contiguous_folds, natural_sorted

LAYOUT = "a CSV/TSV file with header columns path, emotion, language, speaker[, split, gender, text, ...]"
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


def find_manifest(root: str | os.PathLike) -> Path:
    p = Path(root)
    if p.is_file():
        return p
    if p.is_dir():
        for name in MANIFEST_NAMES:
            if (p / name).is_file():
                return p / name
        raise CorpusLayoutError(f"{p}: no manifest file ({', '.join(MANIFEST_NAMES)}); expected {LAYOUT}")
    raise CorpusLayoutError(f"manifest {p} does not exist; expected {LAYOUT}")


def _dialect(path: Path, sample: str):
    if path.suffix.lower() == ".tsv":
        return "excel-tab"
    if path.suffix.lower() == ".csv":
        return "excel"
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;")
    except csv.Error:
        return "excel"


def scan_manifest(path: Path, ctx: ScanContext) -> Scan:
    """Parse a manifest into utterances (sources relative to its folder); `splits_given` when its
    split column is complete."""
    result = Scan(source_root=path.parent)
    corpus, language, labels, strict = ctx.corpus, ctx.language, ctx.labels, ctx.strict
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    rows = csv.DictReader(text.splitlines(), dialect=_dialect(path, text[:4096]))
    header = [h.strip().lower() for h in (rows.fieldnames or [])]
    rows.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    if "language" not in header and not language:
        missing.append("language")
    if missing:
        raise CorpusLayoutError(f"{path}: manifest lacks column(s) {missing} (header: {header}); expected {LAYOUT}")
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
                gender=canonical_gender(row.get("gender", "")),
                text=row.get("text") or None,
                split=split,
                extra=extra,
            )
        )
    result.splits_given = has_split
    return result


def assign_language_folds(utterances: Sequence[Utterance], seed: int, n_folds: int = N_FOLDS) -> list[list[str]]:
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


def scan(ctx: ScanContext) -> Scan:
    """The rows of the manifest at (or in) the root."""
    return scan_manifest(find_manifest(ctx.root), ctx)


SPEC = CorpusSpec(
    name="manifest",
    language=None,
    scan=scan,
    default_folds=assign_language_folds,
    description=LAYOUT,
    root_may_be_file=True,
)
