"""Emotion as prosody: per-emotion distributions of pitch, range, rate, loudness, pauses and voice quality,
and per-language 'display rules' that scale them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EmotionProfile:
    """Per-emotion prosody relative to the speaker's baseline: (mean, sd) pairs.

    pitch/range: espeak-ng units (0-99, voice default 50) added to the speaker's value;
    rate/volume: multipliers; word_gap: pause between words in 10 ms units;
    croak/whisper: probability of a creaky / whispered voice instead of the speaker's own.
    """

    pitch: tuple[float, float]
    range: tuple[float, float]
    rate: tuple[float, float]
    volume: tuple[float, float]
    word_gap: tuple[float, float] = (0.0, 0.6)
    croak: float = 0.0
    whisper: float = 0.0


PROFILES: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(pitch=(0, 4), range=(0, 8), rate=(1.00, 0.06), volume=(1.00, 0.10), croak=0.03),
    "anger": EmotionProfile(pitch=(9, 5), range=(16, 10), rate=(1.12, 0.08), volume=(1.45, 0.16), croak=0.25),
    "happiness": EmotionProfile(pitch=(15, 5), range=(22, 10), rate=(1.08, 0.08), volume=(1.20, 0.13)),
    "sadness": EmotionProfile(
        pitch=(-10, 4), range=(-18, 8), rate=(0.80, 0.06), volume=(0.70, 0.10), word_gap=(2.5, 1.2), whisper=0.12
    ),
    "fear": EmotionProfile(
        pitch=(18, 5), range=(-6, 10), rate=(1.18, 0.08), volume=(0.90, 0.12), word_gap=(1.0, 1.0), whisper=0.10
    ),
    "disgust": EmotionProfile(pitch=(-6, 4), range=(6, 10), rate=(0.85, 0.07), volume=(0.95, 0.12), croak=0.20),
    "surprise": EmotionProfile(pitch=(17, 5), range=(30, 10), rate=(1.00, 0.08), volume=(1.15, 0.12)),
    "boredom": EmotionProfile(
        pitch=(-8, 4), range=(-25, 8), rate=(0.82, 0.06), volume=(0.80, 0.10), word_gap=(1.5, 1.0)
    ),
    "calm": EmotionProfile(pitch=(-4, 4), range=(-10, 8), rate=(0.90, 0.06), volume=(0.85, 0.10)),
}
ALIASES = {
    "angry": "anger",
    "happy": "happiness",
    "joy": "happiness",
    "sad": "sadness",
    "fearful": "fear",
    "disgusted": "disgust",
    "surprised": "surprise",
    "bored": "boredom",
}
MALE_VARIANTS = tuple(f"m{i}" for i in range(1, 8))
FEMALE_VARIANTS = tuple(f"f{i}" for i in range(1, 6))


def profile_for(label: str) -> EmotionProfile:
    name = ALIASES.get(label.lower(), label.lower())
    if name not in PROFILES:
        raise ValueError(
            f"no prosody profile for label {label!r}; synthesizable labels: "
            f"{sorted(PROFILES)} (aliases: {sorted(ALIASES)})"
        )
    return PROFILES[name]


def language_scales(language: str, labels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Per-language 'display rules': how strongly each emotion moves pitch, rate and loudness.

    Fixed per language code (independent of the seed), so a language keeps its style across
    corpora and knowing the language helps a classifier, as with real cross-cultural data.
    """
    rng = random.Random(f"lakd-synth-display-rules-{language.lower()}")
    return {lab: (rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)) for lab in sorted(labels)}
