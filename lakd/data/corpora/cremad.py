"""CREMA-D (Cao et al., 2014): 91 English-speaking actors, 12 sentences, 6 emotions.

Layout (the GitHub/LFS release, `root` is the repository folder or AudioWAV itself):

    AudioWAV/1001_DFA_ANG_XX.wav          actor_sentence_emotion_level
    VideoDemographics.csv                 ActorID,Age,Sex,Race,Ethnicity (optional; gives gender)

Emotion ANG DIS FEA HAP NEU SAD; level LO MD HI XX (unspecified). Without VideoDemographics.csv
gender is "u". Default folds: 5 folds of consecutive actor ids; fold 5 (default) is the test set,
fold 4 the dev set. The release is known to contain a broken file (1076_MTI_SAD_XX.wav); it is a
counted skip.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from lakd import DEFAULT_LABELS
from lakd.data.corpora.importer import import_scan
from lakd.data.corpora.summary import ImportSummary
from lakd.data.corpora.utterances import Scan, Utterance, find_files, log, require_dir
from lakd.data.corpora.writer import ProgressFn
from lakd.data.splits import contiguous_folds

CORPUS = "cremad"
LANGUAGE = "en"
EXPECTED = "AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav (e.g. AudioWAV/1001_DFA_ANG_XX.wav)"
N_FOLDS = 5

EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happiness", "NEU": "neutral", "SAD": "sadness"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
_NAME = re.compile(r"^(\d{4})_([A-Za-z]{3})_([A-Za-z]{3})_([A-Za-z]{2})\.wav$", re.IGNORECASE)


def read_demographics(root: Path) -> dict[str, dict[str, str]]:
    """ActorID -> {gender, age, race, ethnicity} from VideoDemographics.csv, if present."""
    candidates = [root / "VideoDemographics.csv", root.parent / "VideoDemographics.csv"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return {}
    out = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            actor = (row.get("ActorID") or "").strip()
            if not actor:
                continue
            sex = (row.get("Sex") or "").strip().lower()
            out[actor] = {
                "gender": {"male": "m", "female": "f"}.get(sex, "u"),
                **{k.lower(): v.strip() for k, v in row.items() if k and k not in ("ActorID", "Sex") and v},
            }
    log.info("cremad: demographics for %d actors from %s", len(out), path)
    return out


def scan(root: Path, language: str = LANGUAGE, strict: bool = False) -> Scan:
    result = Scan()
    demo = read_demographics(root)
    audio_root = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    for path in find_files(audio_root, _NAME, (".wav",)):
        actor, sentence, emo, level = _NAME.match(path.name).groups()
        sentence, emo, level = sentence.upper(), emo.upper(), level.upper()
        info = demo.get(actor, {})
        extra = {"emotion_raw": emo, "sentence": sentence, "level": LEVELS.get(level, level), "actor": int(actor)}
        extra.update({k: v for k, v in info.items() if k != "gender"})
        result.utterances.append(
            Utterance(
                path=path,
                key=f"{CORPUS}_{path.stem}",
                emotion=EMOTIONS.get(emo, emo.lower()),
                speaker=f"{CORPUS}_{actor}",
                language=language,
                gender=info.get("gender", "u"),
                text=SENTENCES.get(sentence),
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
    """Import CREMA-D. scheme "default" = 5 actor-id folds (fold 1..5, default 5); "loso" = per actor."""
    root = require_dir(root, CORPUS, EXPECTED)
    found = scan(root, language=language, strict=strict)
    speakers = {u.speaker for u in found.utterances}
    folds = contiguous_folds(speakers, min(N_FOLDS, len(speakers))) if speakers else []
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
