"""A synthetic emotional-speech corpus from espeak-ng, in any language espeak-ng speaks.

Why: every pipeline stage (sharding, loading, teachers, distillation, evaluation) needs real
audio with a learnable emotion signal to be tested end to end, and public emotional corpora
cannot ship with the code. Here emotion is rendered with prosody only (pitch level and range,
speaking rate, loudness, pauses, voice quality) sampled from overlapping per-emotion
distributions, on top of per-speaker voices and offsets; sentences are emotionally neutral.

Speech comes from libespeak-ng in-process through ctypes (about 5x faster than a subprocess),
or from the `espeak-ng` program if the library cannot be loaded. libespeak-ng keeps internal
state between utterances (pitch-flutter phase, filters), so each chunk of the plan is rendered
in a fresh worker process: the corpus is then byte-for-byte reproducible for a seed, whatever
the number of workers. (The library and the program give different bytes; both are valid.)

Modules: `espeak` (the engines), `styles` (emotion profiles and per-language display rules), `plan`
(speakers and utterances from the seed), `render` (audio, fresh worker processes), `corpus`
(`synthesize_corpus`: shards and index), `measure` (F0 and prosody features of audio).
"""

from lakd.data.synth.corpus import synthesize_corpus
from lakd.data.synth.espeak import (
    EspeakLibrary,
    EspeakNotFoundError,
    EspeakProgram,
    UnknownLanguageError,
    check_languages,
    open_engine,
)
from lakd.data.synth.measure import estimate_f0, prosody_features
from lakd.data.synth.plan import CORPUS, SAMPLE_RATE, load_sentences, plan_corpus
from lakd.data.synth.render import render, resample
from lakd.data.synth.styles import PROFILES, EmotionProfile, profile_for

__all__ = [
    "CORPUS",
    "PROFILES",
    "SAMPLE_RATE",
    "EmotionProfile",
    "EspeakLibrary",
    "EspeakNotFoundError",
    "EspeakProgram",
    "UnknownLanguageError",
    "check_languages",
    "estimate_f0",
    "load_sentences",
    "open_engine",
    "plan_corpus",
    "profile_for",
    "prosody_features",
    "render",
    "resample",
    "synthesize_corpus",
]
