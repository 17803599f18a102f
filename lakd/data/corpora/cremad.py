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
import re
from pathlib import Path

from lakd.data.corpora.folds import speaker_blocks
from lakd.data.corpora.importer import CorpusSpec
from lakd.data.corpora.labels import canonical_gender
from lakd.data.corpora.utterances import Scan, ScanContext, Utterance, find_files, log

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
            out[actor] = {
                "gender": canonical_gender(row.get("Sex") or ""),
                **{k.lower(): v.strip() for k, v in row.items() if k and k not in ("ActorID", "Sex") and v},
            }
    log.info("cremad: demographics for %d actors from %s", len(out), path)
    return out


def scan(ctx: ScanContext) -> Scan:
    result = Scan()
    demo = read_demographics(ctx.root)
    audio_root = ctx.root / "AudioWAV" if (ctx.root / "AudioWAV").is_dir() else ctx.root
    for path in find_files(audio_root, _NAME, (".wav",)):
        actor, sentence, emo, level = _NAME.match(path.name).groups()
        sentence, emo, level = sentence.upper(), emo.upper(), level.upper()
        info = demo.get(actor, {})
        extra = {"emotion_raw": emo, "sentence": sentence, "level": LEVELS.get(level, level), "actor": int(actor)}
        extra.update({k: v for k, v in info.items() if k != "gender"})
        result.utterances.append(
            Utterance(
                path=path,
                key=f"{ctx.corpus}_{path.stem}",
                emotion=EMOTIONS.get(emo, emo.lower()),
                speaker=f"{ctx.corpus}_{actor}",
                language=ctx.language,
                gender=info.get("gender", "u"),
                text=SENTENCES.get(sentence),
                extra=extra,
            )
        )
    return result


SPEC = CorpusSpec(
    name="cremad",
    language="en",
    scan=scan,
    default_folds=speaker_blocks(5),  # 5 blocks of consecutive actor ids
    description="AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav (e.g. AudioWAV/1001_DFA_ANG_XX.wav)",
)
