"""The corpus as a plan: speakers (voice, baseline offsets, split) and utterances (sentence, emotion,
prosody), drawn deterministically from the seed before anything is rendered."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lakd.data.splits import resolve_split_sizes
from lakd.data.synth.styles import FEMALE_VARIANTS, MALE_VARIANTS, language_scales, profile_for

CORPUS = "lakd-synth"
SAMPLE_RATE = 16_000
SENTENCE_DIR = Path(__file__).parents[1] / "sentences"


def load_sentences(language: str) -> tuple[list[str], str]:
    """Neutral sentences for a language: `<lang>.txt`, else `<base>.txt` (en-us -> en), else generic."""
    candidates = [language.lower(), language.lower().split("-")[0], "generic"]
    for name in candidates:
        p = SENTENCE_DIR / f"{name}.txt"
        if p.is_file():
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
            lines = [ln for ln in lines if ln and not ln.startswith("#")]
            if lines:
                return lines, name
    raise FileNotFoundError(f"no sentence list for {language!r} and no generic.txt in {SENTENCE_DIR}")


@dataclass(frozen=True)
class SpeakerSpec:
    id: str
    language: str
    gender: str
    variant: str
    split: str
    pitch: float
    range: float
    rate: float
    volume: float
    expressiveness: float
    gain_db: float


@dataclass(frozen=True)
class UtteranceSpec:
    key: str
    split: str
    language: str
    speaker: str
    gender: str
    emotion: str
    text: str
    sentence_id: int
    voice: str
    voice_quality: str
    pitch: int
    range: int
    rate: int
    volume: int
    word_gap: int
    gain_db: float
    rand_seed: int

    def meta(self, duration: float) -> dict[str, Any]:
        return {
            "emotion": self.emotion,
            "language": self.language,
            "speaker": self.speaker,
            "gender": self.gender,
            "corpus": CORPUS,
            "split": self.split,
            "text": self.text,
            "duration": round(duration, 3),
            "sample_rate": SAMPLE_RATE,
            "engine": "espeak-ng",
            "voice": self.voice,
            "sentence_id": self.sentence_id,
            "prosody": {
                "pitch": self.pitch,
                "range": self.range,
                "rate": self.rate,
                "volume": self.volume,
                "word_gap": self.word_gap,
                "voice_quality": self.voice_quality,
                "gain_db": round(self.gain_db, 2),
            },
        }


def _default_splits(n: int) -> dict[str, float | int]:
    if n >= 3:
        return {"train": 2 / 3, "dev": 1 / 6, "test": 1 / 6}
    return {"train": n}


def plan_speakers(
    language: str, n: int, splits: Mapping[str, int | float] | None, rng: random.Random
) -> list[SpeakerSpec]:
    """Speakers of one language: alternating gender, distinct voice variants where possible,
    random baseline offsets, each in exactly one split."""
    sizes = resolve_split_sizes(n, splits if splits is not None else _default_splits(n))
    split_of = [s for s, k in sizes.items() for _ in range(k)]
    males, females = list(MALE_VARIANTS), list(FEMALE_VARIANTS)
    rng.shuffle(males)
    rng.shuffle(females)
    out = []
    for i in range(n):
        gender = "m" if i % 2 == 0 else "f"
        pool = males if gender == "m" else females
        variant = pool[(i // 2) % len(pool)]
        out.append(
            SpeakerSpec(
                id=f"{language}_spk{i + 1:02d}",
                language=language,
                gender=gender,
                variant=variant,
                split=split_of[i],
                pitch=float(np.clip(rng.gauss(50, 6), 30, 70)),
                range=float(np.clip(rng.gauss(50, 8), 25, 75)),
                rate=165.0 * math.exp(rng.gauss(0, 0.08)),
                volume=100.0 * math.exp(rng.gauss(0, 0.10)),
                expressiveness=rng.uniform(0.75, 1.25),
                gain_db=rng.gauss(0, 2.5),
            )
        )
    return out


def plan_utterances(
    speaker: SpeakerSpec,
    sentences: Sequence[str],
    labels: Sequence[str],
    count: int,
    rng: random.Random,
    speaker_index: int,
) -> list[UtteranceSpec]:
    """`count` utterances balanced over labels; every emotion reuses the same sentences, so the
    words carry no emotion, and prosody is drawn from the emotion's profile."""
    scales = language_scales(speaker.language, labels)
    per_label: Counter = Counter()
    out = []
    for j in range(count):
        label = labels[j % len(labels)]
        k = per_label[label]
        per_label[label] += 1
        sid = (speaker_index * 5 + k) % len(sentences)
        p = profile_for(label)
        sp, sr, sv = scales[label]
        e = speaker.expressiveness
        pitch = speaker.pitch + e * sp * rng.gauss(*p.pitch)
        range_ = speaker.range + e * rng.gauss(*p.range)
        rate = speaker.rate * (1 + e * sr * (rng.gauss(*p.rate) - 1))
        volume = speaker.volume * (1 + e * sv * (rng.gauss(*p.volume) - 1))
        gap = max(0.0, rng.gauss(*p.word_gap))
        r = rng.random()
        quality = "croak" if r < p.croak else "whisper" if r < p.croak + p.whisper else "modal"
        variant = speaker.variant if quality == "modal" else quality
        out.append(
            UtteranceSpec(
                key=f"lakdsynth_{speaker.id}_{j:04d}",
                split=speaker.split,
                language=speaker.language,
                speaker=speaker.id,
                gender=speaker.gender,
                emotion=label,
                text=sentences[sid],
                sentence_id=sid,
                voice=f"{speaker.language}+{variant}",
                voice_quality=quality,
                pitch=int(round(np.clip(pitch, 0, 99))),
                range=int(round(np.clip(range_, 0, 99))),
                rate=int(round(np.clip(rate, 80, 400))),
                volume=int(round(np.clip(volume, 10, 200))),
                word_gap=int(round(gap)),
                gain_db=speaker.gain_db,
                rand_seed=rng.randrange(1, 2**31),
            )
        )
    return out


def plan_corpus(
    languages: Sequence[str],
    speakers_per_language: int,
    utterances_per_speaker: int,
    labels: Sequence[str],
    seed: int,
    splits: Mapping[str, int | float] | None,
) -> list[UtteranceSpec]:
    """The whole corpus as a list of specs, in rendering order: per language, per split, shuffled."""
    plan: list[UtteranceSpec] = []
    for language in languages:
        rng = random.Random(f"{seed}-{language}")
        sentences, _ = load_sentences(language)
        speakers = plan_speakers(language, speakers_per_language, splits, rng)
        by_split: dict[str, list[UtteranceSpec]] = defaultdict(list)
        for i, spk in enumerate(speakers):
            by_split[spk.split].extend(plan_utterances(spk, sentences, labels, utterances_per_speaker, rng, i))
        for split in sorted(by_split):
            items = by_split[split]
            rng.shuffle(items)  # shards mix speakers and emotions (streaming shuffle buffers are small)
            plan.extend(items)
    return plan
