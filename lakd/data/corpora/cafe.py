"""CaFE (Gournay, Lahaie & Lefebvre, 2018): Canadian French Emotional speech, 12 actors.

Layout (Zenodo: the 48 kHz .wav release, or the 192 kHz/24-bit .aiff release in parts
CaFE_192k_1..): one folder per emotion, with intensity subfolders except for Neutre:

    Colère/Faible/01-C-1-1.wav   Colère/Fort/01-C-2-1.wav   ...   Neutre/01-N-1.wav

File name AA-E-I-S (neutral: AA-N-S): actor (odd = male), emotion letter C=colère (anger)
D=dégoût (disgust) J=joie (happiness) N=neutre P=peur (fear) S=surprise T=tristesse (sadness),
intensity 1=faible (low) 2=fort (high), sentence 1-6. Labels come from the file name, so folder
names may be accented, unaccented or re-encoded. Point `root` at one release (48k or 192k):
the same recording found twice is a counted skip. Language "fr" (Québec French).
Default folds: 6 folds of consecutive actor pairs (1 male + 1 female); fold 6 (default) tests on
actors 11-12 with 09-10 as dev.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from lakd import DEFAULT_LABELS
from lakd.data.corpora.folds import actor_folds
from lakd.data.corpora.importer import import_scan
from lakd.data.corpora.summary import ImportSummary
from lakd.data.corpora.utterances import Scan, Utterance, find_files, require_dir
from lakd.data.corpora.writer import ProgressFn

CORPUS = "cafe"
LANGUAGE = "fr"
EXPECTED = "<Émotion>/<Faible|Fort>/AA-E-I-S.wav (or .aiff) and Neutre/AA-N-S.wav"
ACTORS_PER_FOLD = 2

EMOTIONS = {
    "C": "anger",
    "D": "disgust",
    "J": "happiness",
    "N": "neutral",
    "P": "fear",
    "S": "surprise",
    "T": "sadness",
}
INTENSITY = {"1": "low", "2": "high"}
SENTENCES = {
    "1": "Un cheval fou dans mon jardin",
    "2": "Deux ânes aigris au pelage brun",
    "3": "Trois cygnes aveugles au bord du lac",
    "4": "Quatre vieilles truies éléphantesques",
    "5": "Cinq pumas fiers et passionnés",
    "6": "Six ours aimants domestiqués",
}
_NAME = re.compile(r"^(\d{2})-([CDJNPST])(?:-([12]))?-([1-6])\.(?:wav|aiff|aif)$", re.IGNORECASE)


def scan(root: Path, language: str = LANGUAGE, strict: bool = False) -> Scan:
    result = Scan()
    for path in find_files(root, _NAME, (".wav", ".aiff", ".aif")):
        actor, emo, intensity, sentence = _NAME.match(path.name).groups()
        emo = emo.upper()
        extra = {"emotion_raw": emo, "sentence": int(sentence), "actor": int(actor)}
        if intensity:
            extra["intensity"] = INTENSITY[intensity]
        result.utterances.append(
            Utterance(
                path=path,
                key=f"{CORPUS}_{path.stem}",
                emotion=EMOTIONS[emo],
                speaker=f"{CORPUS}_{actor}",
                language=language,
                gender="m" if int(actor) % 2 else "f",
                text=SENTENCES[sentence],
                extra=extra,
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
    """Import CaFE. scheme "default" = 6 actor-pair folds (fold 1..6, default 6); "loso" = per actor."""
    root = require_dir(root, CORPUS, EXPECTED)
    found = scan(root, language=language, strict=strict)
    folds = actor_folds(found.utterances, ACTORS_PER_FOLD)
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
