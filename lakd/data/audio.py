"""Audio decoding and conversion to the model's input: float32 mono at 16 kHz.

Decoding uses soundfile (torchaudio.load needs torchcodec/FFmpeg, which the stack does not ship);
resampling uses torchaudio's windowed-sinc resampler with one cached kernel per source rate.

Bounds, so that a hostile or broken file cannot blow up memory or reach a model as NaN:
- sample rates outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] are refused before decoding (a WAV header that
  claims 1 Hz would turn a 4 KB file into 16 M samples at 16 kHz);
- `decode_audio(max_seconds=...)` refuses audio whose header promises more than that many seconds;
- `audio_problem` calls finite audio with a peak above MAX_PEAK "out_of_range": float audio lives in
  [-1, 1], and values like 1e30 are finite but overflow to inf/NaN inside a model's normalisation.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch
import torchaudio

from lakd import SAMPLE_RATE

MIN_SAMPLE_RATE = 4_000  # below this no speech band survives; a header claiming less is broken
MAX_SAMPLE_RATE = 192_000  # the highest rate of studio audio
MAX_PEAK = 1_000.0  # float audio is in [-1, 1]; even badly scaled audio stays far below this


class AudioDecodeError(ValueError):
    """Audio bytes that cannot be used; the message names the shard and key. `reason` is the loader's skip
    reason: undecodable_audio (not FLAC/WAV, or broken), bad_sample_rate or too_long."""

    def __init__(self, message: str, reason: str = "undecodable_audio"):
        super().__init__(message)
        self.reason = reason


def check_sample_rate(sample_rate: int, where: str) -> None:
    """Raise AudioDecodeError (bad_sample_rate) unless MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"{where}: sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz",
            "bad_sample_rate",
        )


def decode_audio(data: bytes, ext: str, where: str, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode FLAC/WAV bytes to a float32 array `[frames, channels]` and its sample rate.

    `where` (e.g. "shard.tar:key") is put into the error so a bad sample can be found. The header is
    checked before any sample is decoded: the sample rate (`check_sample_rate`) and, with `max_seconds`,
    the length. Raises AudioDecodeError and nothing else whatever the bytes (tests/test_fuzz.py).
    """
    if not data:
        raise AudioDecodeError(f"{where}: empty .{ext} member")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sample_rate, frames = int(f.samplerate), int(f.frames)
            check_sample_rate(sample_rate, where)
            if max_seconds is not None and frames > max_seconds * sample_rate:
                raise AudioDecodeError(
                    f"{where}: {frames / sample_rate:.1f} s of audio, more than data.max_decoded_seconds="
                    f"{max_seconds:g}",
                    "too_long",
                )
            audio = f.read(dtype="float32", always_2d=True)
    except AudioDecodeError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError... on bad bytes
        raise AudioDecodeError(f"{where}: cannot decode .{ext} audio ({type(e).__name__}: {e})") from e
    return audio, sample_rate


def audio_problem(
    audio: np.ndarray | torch.Tensor, sample_rate: int | None = None, min_seconds: float = 0.0
) -> str | None:
    """Why this audio is unusable for training, or None if it is fine.

    Reasons: "empty_audio" (no frames), "nonfinite_audio" (NaN/inf samples), "out_of_range" (a sample
    beyond ±MAX_PEAK), "silent_audio" (all zeros), "too_short" (shorter than `min_seconds`; needs `sample_rate`).
    """
    a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    frames = a.shape[0] if a.ndim else 0
    if a.size == 0 or frames == 0:
        return "empty_audio"
    if not np.isfinite(a).all():
        return "nonfinite_audio"
    if float(np.abs(a).max()) > MAX_PEAK:
        return "out_of_range"
    if not np.any(a):
        return "silent_audio"
    if sample_rate and min_seconds > 0 and frames < min_seconds * sample_rate:
        return "too_short"
    return None


def describe_problem(problem: str, audio: np.ndarray | torch.Tensor, sample_rate: int) -> str:
    """What a user needs to see of unusable audio: its length and rate, and the peak when the peak is the problem
    (the loader's skip warnings and `lakd shards inspect --decode` say the same)."""
    a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    peak = f", peak {float(np.abs(a).max()):.3g}" if problem == "out_of_range" else ""
    return f"{a.shape[0] if a.ndim else 0} frames at {sample_rate} Hz{peak}"


_RESAMPLERS: dict[tuple[int, int], torchaudio.transforms.Resample] = {}


def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """One Resample module (its sinc kernel computed once) per (source, target) rate, per process."""
    key = (orig, new)
    if key not in _RESAMPLERS:
        _RESAMPLERS[key] = torchaudio.transforms.Resample(orig, new)
    return _RESAMPLERS[key]


MAX_NUMPY_MEAN_CHANNELS = 4  # up to here numpy's channel mean is bit-identical to torch's (tests/test_loader.py)


def to_mono_16k(audio: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Float32 mono waveform `[T]` at 16 kHz from `[frames]` or `[frames, channels]` audio of any rate
    within MIN_SAMPLE_RATE..MAX_SAMPLE_RATE (others raise ValueError: see the module docstring).

    Channels are averaged (not summed), so a stereo file keeps its loudness. A numpy input is made mono
    with numpy, which never spawns intra-op threads: in a loader's main process (num_workers=0) torch
    parallelises every op over 32k elements, and on busy cores each such op on a 2 s clip waited for the
    other threads (to_mono_16k was 60% of a 0-worker loader's time; docs/data-loading.md#scaling-with-workers).
    Only resampling (a convolution, worth threads) runs in torch. Mono 16 kHz audio passes through as a view.
    """
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    if isinstance(audio, np.ndarray) and (audio.ndim == 1 or (audio.ndim == 2 and audio.shape[1] > 0)):
        a = audio if audio.dtype == np.float32 else audio.astype(np.float32)
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        elif a.ndim == 2 and a.shape[1] <= MAX_NUMPY_MEAN_CHANNELS:
            a = a.mean(axis=1, dtype=np.float32)
        if a.ndim == 1:
            wav = torch.from_numpy(np.ascontiguousarray(a))
            if sample_rate != SAMPLE_RATE and wav.numel() > 0:
                with torch.no_grad():
                    wav = _resampler(int(sample_rate), SAMPLE_RATE)(wav.unsqueeze(0)).squeeze(0)
            return wav.contiguous()
        audio = a  # more channels than numpy matches torch on: torch below
    wav = torch.as_tensor(np.ascontiguousarray(audio) if isinstance(audio, np.ndarray) else audio)
    wav = wav.to(torch.float32)
    if wav.ndim == 2:
        wav = wav.mean(dim=1)
    elif wav.ndim != 1:
        raise ValueError(f"audio must be [frames] or [frames, channels], got shape {tuple(wav.shape)}")
    if sample_rate != SAMPLE_RATE and wav.numel() > 0:
        with torch.no_grad():
            wav = _resampler(int(sample_rate), SAMPLE_RATE)(wav.unsqueeze(0)).squeeze(0)
    return wav.contiguous()
