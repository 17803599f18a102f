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
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import ctypes.util
import math
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from lakd import DEFAULT_LABELS
from lakd.data.shards import ShardWriter, encode_flac, write_index
from lakd.data.splits import resolve_split_sizes

CORPUS = "lakd-synth"
SAMPLE_RATE = 16_000
RENDER_CHUNK = 200  # utterances per fresh worker process; part of the byte-exact recipe
SENTENCE_DIR = Path(__file__).parent / "sentences"
INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"

ProgressFn = Callable[[int, int], None]


class EspeakNotFoundError(RuntimeError):
    """Neither libespeak-ng nor the espeak-ng program is available."""


class UnknownLanguageError(ValueError):
    """espeak-ng has no voice for a language code."""


# ============================================================================ espeak-ng engines

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
# espeakCHARS_AUTO | espeakSSML | espeakPHONEMES | espeakENDPAUSE: what the espeak-ng program uses with -m
_SYNTH_FLAGS = 0x0 | 0x10 | 0x100 | 0x1000
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "word_gap": 7}
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _ssml(text: str, range_: int) -> str:
    # pitch range has no command-line flag, so both engines take it from SSML
    return f'<prosody range="{int(range_)}">{escape(text)}</prosody>'


class EspeakLibrary:
    """libespeak-ng via ctypes, synchronous mode: one process-wide instance (the library is global)."""

    name = "lib"
    _instance: EspeakLibrary | None = None

    def __init__(self) -> None:
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        self.lib = ctypes.CDLL(path)
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_DONT_EXIT)
        if self.sample_rate <= 0:
            raise EspeakNotFoundError(f"libespeak-ng ({path}) failed to initialise (espeak-ng-data missing?)")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: the library calls it
        self.lib.espeak_SetSynthCallback(self._callback)
        try:
            self._libc = ctypes.CDLL(None)
            self._libc.srand.argtypes = [ctypes.c_uint]
        except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
            self._libc = None

    @classmethod
    def get(cls) -> EspeakLibrary:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_audio(self, wav, n, events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def has_voice(self, voice: str) -> bool:
        return self.lib.espeak_SetVoiceByName(voice.encode()) == 0

    def synth(
        self, voice: str, text: str, pitch: int, range_: int, rate: int, volume: int, word_gap: int, rand_seed: int = 0
    ) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise UnknownLanguageError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices`)")
        for name, value in (("rate", rate), ("volume", volume), ("pitch", pitch), ("word_gap", word_gap)):
            self.lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        if self._libc is not None:  # breathy/creaky voices draw noise from rand()
            self._libc.srand(rand_seed & 0xFFFFFFFF)
        data = _ssml(text, range_).encode() + b"\0"
        self._chunks = []
        err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _SYNTH_FLAGS, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err} for voice {voice!r}, text {text!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


class EspeakProgram:
    """The espeak-ng command-line program (`--stdout` WAV), one process per utterance."""

    name = "cli"

    def __init__(self) -> None:
        self.exe = shutil.which("espeak-ng")
        if self.exe is None:
            raise EspeakNotFoundError(f"the espeak-ng program is not on PATH; {INSTALL_HINT}")
        self.sample_rate = 22050

    def has_voice(self, voice: str) -> bool:
        r = subprocess.run([self.exe, "-q", "-v", voice, "a"], capture_output=True)
        return r.returncode == 0 and b"does not exist" not in r.stderr

    def synth(
        self, voice: str, text: str, pitch: int, range_: int, rate: int, volume: int, word_gap: int, rand_seed: int = 0
    ) -> np.ndarray:
        cmd = [
            self.exe,
            "--stdout",
            "-m",
            "-v",
            voice,
            "-p",
            str(int(pitch)),
            "-s",
            str(int(rate)),
            "-a",
            str(int(volume)),
            "-g",
            str(int(word_gap)),
            _ssml(text, range_),
        ]
        r = subprocess.run(cmd, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:-1])} failed: {r.stderr.decode(errors='replace').strip()}")
        return self._parse_wav(r.stdout)

    def _parse_wav(self, data: bytes) -> np.ndarray:
        # espeak-ng streams WAV with placeholder sizes: read the format, then everything after "data"
        if data[:4] != b"RIFF" or b"data" not in data[:200]:
            raise RuntimeError("espeak-ng --stdout did not produce WAV data")
        self.sample_rate = int.from_bytes(data[24:28], "little")
        start = data.index(b"data", 12) + 8
        body = data[start:]
        return np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.int16)


def open_engine(backend: str = "auto") -> EspeakLibrary | EspeakProgram:
    """An espeak-ng engine: "lib" (ctypes), "cli" (program) or "auto" (lib, else program)."""
    if backend not in ("auto", "lib", "cli"):
        raise ValueError(f"backend must be auto, lib or cli, got {backend!r}")
    errors = []
    if backend in ("auto", "lib"):
        try:
            return EspeakLibrary.get()
        except (OSError, EspeakNotFoundError) as e:
            if backend == "lib":
                raise EspeakNotFoundError(f"cannot load libespeak-ng ({e}); {INSTALL_HINT}") from e
            errors.append(f"libespeak-ng: {e}")
    try:
        return EspeakProgram()
    except EspeakNotFoundError as e:
        errors.append(str(e))
    raise EspeakNotFoundError("espeak-ng is not installed (" + "; ".join(errors) + f"); {INSTALL_HINT}")


def check_languages(engine, languages: Sequence[str]) -> None:
    bad = [
        lang
        for lang in languages
        if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]+)*", lang) or not engine.has_voice(lang)
    ]
    if bad:
        raise UnknownLanguageError(
            f"espeak-ng has no voice for language code(s) {bad}; run `espeak-ng --voices` "
            "to list the codes it knows (e.g. en, fi, fr, de, es, it, sv, en-us, pt-br)"
        )


# ============================================================================ sentences


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


# ============================================================================ prosody


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


def _language_scales(language: str, labels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Per-language 'display rules': how strongly each emotion moves pitch, rate and loudness.

    Fixed per language code (independent of the seed), so a language keeps its style across
    corpora and knowing the language helps a classifier, as with real cross-cultural data.
    """
    rng = random.Random(f"lakd-synth-display-rules-{language.lower()}")
    return {lab: (rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)) for lab in sorted(labels)}


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
    scales = _language_scales(speaker.language, labels)
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


# ============================================================================ rendering

_RESAMPLE_HALF_WIDTH = 16  # input samples each side: 32 taps


def _kaiser(t: np.ndarray, half_width: float, beta: float = 8.0) -> np.ndarray:
    r = np.clip(1.0 - (t / half_width) ** 2, 0.0, None)
    return np.where(np.abs(t) < half_width, np.i0(beta * np.sqrt(r)) / np.i0(beta), 0.0)


_POLYPHASE: dict[tuple[int, int], np.ndarray] = {}


def _polyphase_table(up: int, down: int) -> np.ndarray:
    """Windowed-sinc filter taps for each of the `up` output phases, shape (up, 2W)."""
    if (up, down) not in _POLYPHASE:
        w = _RESAMPLE_HALF_WIDTH
        cutoff = min(1.0, up / down) * 0.92  # fraction of the input Nyquist frequency
        t = np.arange(-w + 1, w + 1)[None, :] - (np.arange(up) / up)[:, None]
        _POLYPHASE[(up, down)] = cutoff * np.sinc(cutoff * t) * _kaiser(t, w)
    return _POLYPHASE[(up, down)]


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling in numpy (22050 -> 16000 Hz in ~3 ms per second of audio).

    Used instead of scipy.signal, whose import alone costs each fresh worker ~1.5 s.
    """
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float64)
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    table = _polyphase_table(up, down)
    w = _RESAMPLE_HALF_WIDTH
    x = np.asarray(x, dtype=np.float64)
    n_out = -(-len(x) * up // down)
    xp = np.concatenate([np.zeros(w), x, np.zeros(w + down + 1)])
    windows = np.lib.stride_tricks.sliding_window_view(xp, 2 * w)  # windows[i] = x[i-w+1 .. i+w] (no copy)
    out = np.empty(n_out)
    # outputs r, r+up, r+2up, ... share one filter phase and step through the input by `down`
    for r in range(min(up, n_out)):
        base, phase = divmod(r * down, up)
        m = len(range(r, n_out, up))
        out[r::up] = windows[base + 1 : base + 1 + m * down : down] @ table[phase]
    return out


def render(engine, spec: UtteranceSpec) -> np.ndarray:
    """One utterance as float32 16 kHz mono in [-1, 1)."""
    pcm = engine.synth(
        spec.voice, spec.text, spec.pitch, spec.range, spec.rate, spec.volume, spec.word_gap, spec.rand_seed
    )
    if pcm.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for voice {spec.voice!r}, text {spec.text!r}")
    x = resample(pcm.astype(np.float64) / 32768.0, engine.sample_rate)
    x *= 10 ** (spec.gain_db / 20)
    return np.clip(x, -1.0, 32767 / 32768).astype(np.float32)


def _render_chunk(specs: list[dict], backend: str) -> list[tuple[str, bytes, int]]:
    """Render and FLAC-encode a chunk with this process's espeak-ng state."""
    engine = open_engine(backend)
    out = []
    for d in specs:
        audio = render(engine, UtteranceSpec(**d))
        out.append((d["key"], encode_flac(audio, SAMPLE_RATE), len(audio)))
    return out


def _render_chunk_fresh(specs: list[dict], backend: str) -> list[tuple[str, bytes, int]]:
    """Render a chunk in a fresh `python -m lakd.data.synth` process (so espeak-ng starts from a clean state).

    A plain subprocess instead of multiprocessing: it works from scripts without a __main__
    guard, notebooks and test runners alike.
    """
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    r = subprocess.run(
        [sys.executable, "-m", "lakd.data.synth"], input=pickle.dumps((specs, backend)), capture_output=True, env=env
    )
    if r.returncode != 0:
        tail = r.stderr.decode(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError("speech synthesis worker failed:\n" + "\n".join(tail))
    return pickle.loads(r.stdout)


def _worker_main() -> None:
    specs, backend = pickle.loads(sys.stdin.buffer.read())
    result_fd = os.dup(1)
    os.dup2(2, 1)  # anything the C library prints goes to stderr, not into the result stream
    result = _render_chunk(specs, backend)
    with os.fdopen(result_fd, "wb") as out:
        out.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


def _chunks(plan: Sequence[UtteranceSpec]) -> list[list[UtteranceSpec]]:
    """Fixed-size chunks that never mix languages (a chunk is the unit of a fresh espeak-ng state)."""
    out: list[list[UtteranceSpec]] = []
    for spec in plan:
        if not out or len(out[-1]) >= RENDER_CHUNK or out[-1][-1].language != spec.language:
            out.append([])
        out[-1].append(spec)
    return out


def _existing_shards(out_dir: Path, splits: Iterable[str], overwrite: bool) -> list[Path]:
    existing = [p for s in splits for p in sorted((out_dir / s).glob("*.tar"))] if out_dir.exists() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds shards ({existing[0]} ...); pass overwrite=True "
            "(--overwrite) to replace them, or choose another output folder"
        )
    return existing


def synthesize_corpus(
    out_dir: str | os.PathLike,
    languages: Sequence[str] = ("en", "fi", "fr"),
    speakers_per_language: int = 6,
    utterances_per_speaker: int = 24,
    labels: Sequence[str] = DEFAULT_LABELS,
    seed: int = 0,
    splits: Mapping[str, int | float] | None = None,
    shard_size: int = 200,
    progress: ProgressFn | None = None,
    backend: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Synthesize a speaker-independent emotional corpus into `{out_dir}/{split}/{lang}-NNNNNN.tar`.

    `splits` gives speakers per split as counts ({"train": 4, "dev": 1, "test": 1}) or fractions
    (default 2/3, 1/6, 1/6); every speaker is in exactly one split. Same arguments and espeak-ng
    version -> the same bytes. Returns a summary dict (counts, speakers, shards, `rows` for a table).
    """
    t0 = time.time()
    if isinstance(languages, str):
        languages = languages.split(",")
    if isinstance(labels, str):
        labels = labels.split(",")
    languages = list(dict.fromkeys(x.strip() for x in languages if x.strip()))
    labels = [x.strip() for x in labels]
    if not languages:
        raise ValueError("give at least one language code")
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be a non-empty list of distinct names, got {labels}")
    for lab in labels:
        profile_for(lab)
    if speakers_per_language < 1 or utterances_per_speaker < 1:
        raise ValueError("speakers_per_language and utterances_per_speaker must be >= 1")
    engine = open_engine(backend)
    check_languages(engine, languages)
    plan = plan_corpus(languages, speakers_per_language, utterances_per_speaker, labels, seed, splits)
    split_names = sorted({s.split for s in plan})
    out_dir = Path(out_dir)
    old_shards = _existing_shards(out_dir, split_names, overwrite)

    chunks = _chunks(plan)
    n_workers = max(1, min(workers or (os.cpu_count() or 1), len(chunks)))
    writers: dict[tuple[str, str], ShardWriter] = {}
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    durations: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    speakers: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    done = 0
    # shards are staged and moved into place only when the whole corpus is done
    staging = out_dir / f".staging-synth-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    pool = cf.ThreadPoolExecutor(max_workers=n_workers)
    try:
        jobs = [pool.submit(_render_chunk_fresh, [asdict(s) for s in chunk], engine.name) for chunk in chunks]
        for chunk, job in zip(chunks, jobs):
            for spec, (key, flac, n) in zip(chunk, job.result()):
                w = writers.get((spec.split, spec.language))
                if w is None:
                    w = writers[(spec.split, spec.language)] = ShardWriter(
                        staging / spec.split, prefix=spec.language, max_count=shard_size, write_index=False
                    )
                w.write(key, spec.meta(n / SAMPLE_RATE), audio_bytes=flac, audio_ext="flac")
                counts[spec.split][spec.language][spec.emotion] += 1
                durations[spec.split][spec.language] += n / SAMPLE_RATE
                speakers[spec.split][spec.language].add(spec.speaker)
                done += 1
                if progress:
                    progress(done, len(plan))
        for w in writers.values():
            w.close()
        for p in old_shards:
            p.unlink()
        for split in split_names:
            (out_dir / split).mkdir(parents=True, exist_ok=True)
            for tar in sorted((staging / split).glob("*.tar")):
                os.replace(tar, out_dir / split / tar.name)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
    indexes = {s: write_index(out_dir / s) for s in split_names}

    from lakd.data.corpora.summary import count_rows, split_order

    spk = {s: {lang: sorted(v) for lang, v in langs.items()} for s, langs in speakers.items()}
    return {
        "corpus": CORPUS,
        "out_dir": str(out_dir),
        "backend": engine.name,
        "seed": seed,
        "languages": languages,
        "labels": labels,
        "sentences": {lang: load_sentences(lang)[1] for lang in languages},
        "num_samples": len(plan),
        "duration_s": round(sum(i["duration_s"] for i in indexes.values()), 2),
        "splits": {
            s: {
                "dir": str(out_dir / s),
                "num_samples": indexes[s]["num_samples"],
                "duration_s": indexes[s]["duration_s"],
                "speakers": sorted({x for v in spk[s].values() for x in v}),
                "counts": {lang: dict(sorted(c.items())) for lang, c in sorted(counts[s].items())},
                "shards": [str(out_dir / s / sh["path"]) for sh in indexes[s]["shards"]],
            }
            for s in split_order(split_names)
        },
        "rows": count_rows(counts, spk, durations, labels),
        "seconds": round(time.time() - t0, 2),
    }


# ============================================================================ measuring prosody


def estimate_f0(
    audio: np.ndarray,
    sample_rate: int,
    fmin: float = 60.0,
    fmax: float = 500.0,
    frame_s: float = 0.04,
    hop_s: float = 0.01,
    threshold: float = 0.5,
) -> np.ndarray:
    """Per-frame F0 (Hz) by normalised autocorrelation; NaN for unvoiced or silent frames.

    Simple and dependency-free: good enough to check that synthetic emotions differ in pitch.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    n, hop = int(frame_s * sample_rate), int(hop_s * sample_rate)
    lag_min, lag_max = int(sample_rate / fmax), min(int(sample_rate / fmin), n - 1)
    if len(x) < n:
        return np.full(0, np.nan)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = (frames**2).sum(axis=1)
    loud = energy > 1e-4 * n * max(float((x**2).mean()), 1e-12)
    spec = np.fft.rfft(frames, 2 * n, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :n]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    window = ac[:, lag_min : lag_max + 1]
    best = window.argmax(axis=1)
    peak = window[np.arange(len(window)), best]
    f0 = sample_rate / (best + lag_min)
    return np.where(loud & (peak > threshold), f0, np.nan)


def prosody_features(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Mean/SD F0 over voiced frames, RMS, duration and voiced fraction of one utterance."""
    f0 = estimate_f0(audio, sample_rate)
    voiced = f0[~np.isnan(f0)]
    x = np.asarray(audio, dtype=np.float64)
    return {
        "f0_mean": float(voiced.mean()) if voiced.size else float("nan"),
        "f0_std": float(voiced.std()) if voiced.size else float("nan"),
        "rms": float(np.sqrt((x**2).mean())) if x.size else 0.0,
        "duration": len(x) / sample_rate,
        "voiced_fraction": float(voiced.size / max(len(f0), 1)),
    }


if __name__ == "__main__":  # the rendering worker (see _render_chunk_fresh)
    _worker_main()
