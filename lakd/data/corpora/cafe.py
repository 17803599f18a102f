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

import re

from lakd.data.corpora.folds import actor_folds
from lakd.data.corpora.importer import CorpusSpec
from lakd.data.corpora.utterances import Scan, ScanContext, Utterance, find_files

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


def scan(ctx: ScanContext) -> Scan:
    result = Scan()
    for path in find_files(ctx.root, _NAME, (".wav", ".aiff", ".aif")):
        actor, emo, intensity, sentence = _NAME.match(path.name).groups()
        emo = emo.upper()
        extra = {"emotion_raw": emo, "sentence": int(sentence), "actor": int(actor)}
        if intensity:
            extra["intensity"] = INTENSITY[intensity]
        result.utterances.append(
            Utterance(
                path=path,
                key=f"{ctx.corpus}_{path.stem}",
                emotion=EMOTIONS[emo],
                speaker=f"{ctx.corpus}_{actor}",
                language=ctx.language,
                gender="m" if int(actor) % 2 else "f",
                text=SENTENCES[sentence],
                extra=extra,
            )
        )
    return result


SPEC = CorpusSpec(
    name="cafe",
    language="fr",
    scan=scan,
    default_folds=actor_folds(2),  # 6 actor pairs (1 male + 1 female)
    description="<Émotion>/<Faible|Fort>/AA-E-I-S.wav (or .aiff) and Neutre/AA-N-S.wav",
)
