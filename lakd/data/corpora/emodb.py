"""EmoDB (Burkhardt et al., 2005): Berlin Database of Emotional Speech, 10 German actors.

Layout (download.zip from emodb.bilderbar.info, `root` is the unpacked folder):

    wav/03a01Fa.wav        speaker (2 digits) + text code (a01..b10) + emotion letter + version letter

Emotion letters (German): W Wut=anger, L Langeweile=boredom, E Ekel=disgust, A Angst=fear,
F Freude=happiness, T Trauer=sadness, N neutral. Male speakers 03 10 11 12 15, female 08 09 13 14 16.
Default folds: 5 mixed-gender speaker pairs (03+08, 09+10, 11+13, 12+14, 15+16); fold 5 (default)
tests on 15+16 with 12+14 as dev. "loso" gives the common leave-one-speaker-out protocol.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from lakd import DEFAULT_LABELS
from lakd.data.corpora.importer import import_scan
from lakd.data.corpora.summary import ImportSummary
from lakd.data.corpora.utterances import Scan, Utterance, find_files, require_dir
from lakd.data.corpora.writer import ProgressFn
from lakd.data.splits import contiguous_folds

CORPUS = "emodb"
LANGUAGE = "de"
EXPECTED = "wav/<speaker><text><emotion><version>.wav (e.g. wav/03a01Fa.wav)"

EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}
GENDER = {"03": "m", "10": "m", "11": "m", "12": "m", "15": "m", "08": "f", "09": "f", "13": "f", "14": "f", "16": "f"}
PAIRS = [("03", "08"), ("09", "10"), ("11", "13"), ("12", "14"), ("15", "16")]
TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
_NAME = re.compile(r"^(\d{2})([ab]\d{2})([A-Z])([a-z])\.wav$")


def scan(root: Path, language: str = LANGUAGE, strict: bool = False) -> Scan:
    result = Scan()
    audio_root = root / "wav" if (root / "wav").is_dir() else root
    for path in find_files(audio_root, _NAME, (".wav",)):
        speaker, text, emo, version = _NAME.match(path.name).groups()
        result.utterances.append(
            Utterance(
                path=path,
                key=f"{CORPUS}_{path.stem}",
                emotion=EMOTIONS.get(emo, emo),
                speaker=f"{CORPUS}_{speaker}",
                language=language,
                gender=GENDER.get(speaker, "u"),
                text=TEXTS.get(text),
                extra={"emotion_raw": emo, "text_id": text, "version": version},
            )
        )
    return result


def default_folds(speakers: set[str]) -> list[list[str]]:
    """The fixed mixed-gender pairs when the speakers are EmoDB's ten, else 5 contiguous folds."""
    pairs = [[f"{CORPUS}_{a}", f"{CORPUS}_{b}"] for a, b in PAIRS]
    if speakers and speakers <= {s for p in pairs for s in p}:
        return [[s for s in p if s in speakers] for p in pairs]
    return contiguous_folds(speakers, min(5, len(speakers))) if speakers else []


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
    """Import EmoDB. scheme "default" = 5 speaker-pair folds (fold 1..5, default 5); "loso" = per speaker."""
    root = require_dir(root, CORPUS, EXPECTED)
    found = scan(root, language=language, strict=strict)
    folds = default_folds({u.speaker for u in found.utterances})
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
