"""FESC (Finnish Emotional Speech Corpus): imported by lakd's documented folder convention.

FESC's distribution layout is not publicly documented, so this importer reads one of two
conventions (see docs/corpora.md for how to adapt a copy):

1. folders:  <root>/<speaker>/<emotion>/<file>.wav
   emotion folder names in Finnish or English (viha/suuttumus=anger, ilo=happiness,
   neutraali=neutral, suru=sadness, pelko=fear, inho=disgust, yllätys=surprise, ...);
   optional <root>/speakers.csv (speaker,gender); otherwise a speaker folder named like
   F01/M01 gives the gender, else "u".
2. a labels file: <root>/labels.csv or labels.tsv with the manifest columns
   (path, emotion, speaker[, language, split, gender, text, ...]); language defaults to "fi".

Default folds: speakers shuffled (seeded) into 5 folds; fold 5 (default) = test, fold 4 = dev.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from lakd import DEFAULT_LABELS
from lakd.data.corpora import manifest
from lakd.data.corpora.importer import import_scan
from lakd.data.corpora.labels import canonical_emotion, sanitize_key
from lakd.data.corpora.summary import ImportSummary
from lakd.data.corpora.utterances import CorpusLayoutError, Scan, Utterance, require_dir
from lakd.data.corpora.writer import ProgressFn

CORPUS = "fesc"
LANGUAGE = "fi"
EXPECTED = "<speaker>/<emotion>/<file>.wav folders, or labels.csv (path, emotion, speaker, ...)"
AUDIO_EXTS = (".wav", ".flac", ".aiff", ".aif")

FINNISH_EMOTIONS = {
    "viha": "anger",
    "suuttumus": "anger",
    "vihainen": "anger",
    "ilo": "happiness",
    "iloinen": "happiness",
    "onni": "happiness",
    "neutraali": "neutral",
    "suru": "sadness",
    "surullinen": "sadness",
    "pelko": "fear",
    "inho": "disgust",
    "yllätys": "surprise",
    "yllatys": "surprise",
    "ikävystyminen": "boredom",
    "tylsistyminen": "boredom",
    "hellyys": "tenderness",
}
_GENDERED = re.compile(r"^([FfMm])[_\-]?\d+$")


def read_speaker_genders(root: Path) -> dict[str, str]:
    path = root / "speakers.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if row.get("speaker"):
            out[row["speaker"]] = manifest.GENDER_ALIASES.get(row.get("gender", "").lower(), "u")
    return out


def scan_folders(root: Path, language: str = LANGUAGE, labels: Iterable[str] = ()) -> Scan:
    result = Scan()
    labels = list(labels)
    genders = read_speaker_genders(root)
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for emo_dir in sorted(p for p in spk_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            name = emo_dir.name.strip()
            emotion = FINNISH_EMOTIONS.get(name.lower(), canonical_emotion(name, labels))
            for path in sorted(emo_dir.rglob("*")):
                if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in AUDIO_EXTS:
                    continue
                gender = genders.get(spk_dir.name)
                if gender is None:
                    m = _GENDERED.match(spk_dir.name)
                    gender = m.group(1).lower() if m else "u"
                rel = path.relative_to(root).with_suffix("").as_posix()
                result.utterances.append(
                    Utterance(
                        path=path,
                        key=sanitize_key(f"{CORPUS}_{rel}"),
                        emotion=emotion,
                        speaker=f"{CORPUS}_{spk_dir.name}",
                        language=language,
                        gender=gender,
                        extra={"emotion_raw": name},
                    )
                )
    return result


def prepare(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    labels: Iterable[str] = DEFAULT_LABELS,
    fold: int | str | None = None,
    scheme: str = "default",
    label_map: Mapping[str, str] | None = None,
    language: str = LANGUAGE,
    shard_size: int = 200,
    strict: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> ImportSummary:
    """Import FESC by the folder or labels-file convention. scheme "default" = 5 seeded speaker folds
    (fold 1..5, default 5), or the labels file's split column when it has one; "loso" = per speaker."""
    root = require_dir(root, CORPUS, EXPECTED)
    if any((root / n).is_file() for n in ("labels.csv", "labels.tsv")):
        finnish = {**FINNISH_EMOTIONS, **{k.capitalize(): v for k, v in FINNISH_EMOTIONS.items()}}
        return manifest.prepare(
            root,
            out_dir,
            labels=labels,
            fold=fold,
            scheme=scheme,
            label_map={**finnish, **(label_map or {})},
            language=language,
            corpus=CORPUS,
            shard_size=shard_size,
            strict=strict,
            seed=seed,
            progress=progress,
        )
    labels = list(labels)
    found = scan_folders(root, language=language, labels=labels)
    if not found.utterances:
        raise CorpusLayoutError(f"{CORPUS}: found no audio under {root}; expected {EXPECTED}")
    folds = manifest.assign_language_folds(found.utterances, seed)
    return import_scan(
        CORPUS,
        root,
        out_dir,
        found,
        folds,
        EXPECTED,
        labels=labels,
        fold=fold,
        scheme=scheme,
        label_map=label_map,
        shard_size=shard_size,
        strict=strict,
        seed=seed,
        progress=progress,
    )
