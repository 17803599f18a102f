"""espeak-ng engines: libespeak-ng in-process through ctypes, or the `espeak-ng` program.

The library is about 5x faster than a subprocess per utterance; the program is the fallback when the
library cannot be loaded. (The two give different bytes; both are valid.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import subprocess
from collections.abc import Sequence
from xml.sax.saxutils import escape

import numpy as np

INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"


class EspeakNotFoundError(RuntimeError):
    """Neither libespeak-ng nor the espeak-ng program is available."""


class UnknownLanguageError(ValueError):
    """espeak-ng has no voice for a language code."""


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
        self.render_chunks: list[np.ndarray] = []
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
            self.render_chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
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
        self.render_chunks = []
        err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _SYNTH_FLAGS, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err} for voice {voice!r}, text {text!r}")
        return np.concatenate(self.render_chunks) if self.render_chunks else np.zeros(0, np.int16)


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
