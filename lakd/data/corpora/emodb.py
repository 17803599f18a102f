"""EmoDB (Burkhardt et al., 2005): Berlin Database of Emotional Speech, 10 German actors.

Layout (download.zip from emodb.bilderbar.info, `root` is the unpacked folder):

    wav/03a01Fa.wav        speaker (2 digits) + text code (a01..b10) + emotion letter + version letter

Emotion letters (German): W Wut=anger, L Langeweile=boredom, E Ekel=disgust, A Angst=fear,
F Freude=happiness, T Trauer=sadness, N neutral. Male speakers 03 10 11 12 15, female 08 09 13 14 16.
Default folds: 5 mixed-gender speaker pairs (03+08, 09+10, 11+13, 12+14, 15+16); fold 5 (default)
tests on 15+16 with 12+14 as dev. "loso" gives the common leave-one-speaker-out protocol.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lakd.data.corpora.folds import speaker_blocks
from lakd.data.corpora.importer import CorpusSpec
from lakd.data.corpora.utterances import Scan, ScanContext, Utterance, find_files

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


def scan(ctx: ScanContext) -> Scan:
    result = Scan()
    audio_root = ctx.root / "wav" if (ctx.root / "wav").is_dir() else ctx.root
    for path in find_files(audio_root, _NAME, (".wav",)):
        speaker, text, emo, version = _NAME.match(path.name).groups()
        result.utterances.append(
            Utterance(
                path=path,
                key=f"{ctx.corpus}_{path.stem}",
                emotion=EMOTIONS.get(emo, emo),
                speaker=f"{ctx.corpus}_{speaker}",
                language=ctx.language,
                gender=GENDER.get(speaker, "u"),
                text=TEXTS.get(text),
                extra={"emotion_raw": emo, "text_id": text, "version": version},
            )
        )
    return result


def pair_folds(utterances: Sequence[Utterance], seed: int) -> list[list[str]]:
    """The fixed mixed-gender pairs when the speakers are EmoDB's ten, else 5 contiguous folds."""
    by_number = {u.speaker.rsplit("_", 1)[-1]: u.speaker for u in utterances}
    if by_number and set(by_number) <= {s for pair in PAIRS for s in pair}:
        return [[by_number[s] for s in pair if s in by_number] for pair in PAIRS]
    return speaker_blocks(5)(utterances, seed)


SPEC = CorpusSpec(
    name="emodb",
    language="de",
    scan=scan,
    default_folds=pair_folds,
    description="wav/<speaker><text><emotion><version>.wav (e.g. wav/03a01Fa.wav)",
)
