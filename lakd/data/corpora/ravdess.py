"""RAVDESS (Livingstone & Russo, 2018): 24 North-American English actors, audio-only speech.

Layout (Audio_Speech_Actors_01-24.zip, `root` is the unpacked folder):

    Actor_01/03-01-01-01-01-01-01.wav ... Actor_24/...

File name: modality-channel-emotion-intensity-statement-repetition-actor. Only audio-only (03)
speech (channel 01) is imported; song or video files found under the root are excluded and counted.
Emotion 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised;
odd actors are male. Default folds: 6 folds of 4 consecutive actors (2 male + 2 female);
fold 6 (default) tests on actors 21-24 with 17-20 as dev.
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

CORPUS = "ravdess"
LANGUAGE = "en"
EXPECTED = "Actor_XX/03-01-EE-II-SS-RR-AA.wav files"
ACTORS_PER_FOLD = 4

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
INTENSITY = {"01": "normal", "02": "strong"}
_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.wav$", re.IGNORECASE)


def scan(root: Path, language: str = LANGUAGE, strict: bool = False) -> Scan:
    result = Scan()
    for path in find_files(root, _NAME, (".wav",)):
        modality, channel, emo, intensity, statement, repetition, actor = _NAME.match(path.name).groups()
        if modality != "03":
            result.excluded[f"not audio-only (modality {modality})"] += 1
            continue
        if channel != "01":
            result.excluded["song (vocal channel 02)"] += 1
            continue
        result.utterances.append(
            Utterance(
                path=path,
                key=f"{CORPUS}_{path.stem}",
                emotion=EMOTIONS.get(emo, f"code{emo}"),
                speaker=f"{CORPUS}_{actor}",
                language=language,
                gender="m" if int(actor) % 2 else "f",
                text=STATEMENTS.get(statement),
                extra={
                    "emotion_raw": emo,
                    "intensity": INTENSITY.get(intensity, intensity),
                    "statement": statement,
                    "repetition": int(repetition),
                    "actor": int(actor),
                },
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
    """Import RAVDESS speech. scheme "default" = 6 actor folds (fold 1..6, default 6); "loso" = per actor."""
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
