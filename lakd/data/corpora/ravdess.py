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

import re

from lakd.data.corpora.folds import actor_folds
from lakd.data.corpora.importer import CorpusSpec
from lakd.data.corpora.utterances import Scan, ScanContext, Utterance, find_files

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


def scan(ctx: ScanContext) -> Scan:
    result = Scan()
    for path in find_files(ctx.root, _NAME, (".wav",)):
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
                key=f"{ctx.corpus}_{path.stem}",
                emotion=EMOTIONS.get(emo, f"code{emo}"),
                speaker=f"{ctx.corpus}_{actor}",
                language=ctx.language,
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


SPEC = CorpusSpec(
    name="ravdess",
    language="en",
    scan=scan,
    default_folds=actor_folds(4),  # 6 folds of 4 consecutive actors (2 male + 2 female)
    description="Actor_XX/03-01-EE-II-SS-RR-AA.wav files",
)
