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
import re
from collections.abc import Sequence
from pathlib import Path

from lakd.data.corpora import manifest
from lakd.data.corpora.importer import CorpusSpec
from lakd.data.corpora.labels import canonical_emotion, canonical_gender, sanitize_key
from lakd.data.corpora.utterances import Scan, ScanContext, Utterance

LABELS_FILES = ("labels.csv", "labels.tsv")
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


def finnish_emotion(name: str, labels: Sequence[str]) -> str:
    """The canonical name for a Finnish or English emotion name (a configured label is kept as is)."""
    return FINNISH_EMOTIONS.get(name.strip().lower(), canonical_emotion(name, labels))


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
            out[row["speaker"]] = canonical_gender(row.get("gender", ""))
    return out


def scan_labels_file(path: Path, ctx: ScanContext) -> Scan:
    """The manifest convention, with Finnish emotion names understood."""
    found = manifest.scan_manifest(path, ctx)
    for u in found.utterances:
        u.emotion = finnish_emotion(u.extra["emotion_raw"], ctx.labels)
    return found


def scan_folders(ctx: ScanContext) -> Scan:
    """<root>/<speaker>/<emotion>/<file>: gender from speakers.csv, else an F01/M01 folder name."""
    root = ctx.root
    result = Scan()
    genders = read_speaker_genders(root)
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for emo_dir in sorted(p for p in spk_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            name = emo_dir.name.strip()
            emotion = finnish_emotion(name, ctx.labels)
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
                        key=sanitize_key(f"{ctx.corpus}_{rel}"),
                        emotion=emotion,
                        speaker=f"{ctx.corpus}_{spk_dir.name}",
                        language=ctx.language,
                        gender=gender,
                        extra={"emotion_raw": name},
                    )
                )
    return result


def scan(ctx: ScanContext) -> Scan:
    """The labels file's rows when the root has one, else the speaker/emotion folders."""
    labels_file = next((ctx.root / n for n in LABELS_FILES if (ctx.root / n).is_file()), None)
    return scan_labels_file(labels_file, ctx) if labels_file else scan_folders(ctx)


SPEC = CorpusSpec(
    name="fesc",
    language="fi",
    scan=scan,
    default_folds=manifest.assign_language_folds,
    description="<speaker>/<emotion>/<file>.wav folders, or labels.csv (path, emotion, speaker, ...)",
)
