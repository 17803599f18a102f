"""Audio decoding and conversion to the model's input: float32 mono at 16 kHz.

Decoding uses soundfile (torchaudio.load needs torchcodec/FFmpeg, which the stack does not ship);
resampling uses torchaudio's windowed-sinc resampler with one cached kernel per source rate.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch
import torchaudio

from lakd import SAMPLE_RATE


class AudioDecodeError(ValueError):
    """Audio bytes that soundfile cannot decode; the message names the shard and key."""


def decode_audio(data: bytes, ext: str, where: str) -> tuple[np.ndarray, int]:
    """Decode FLAC/WAV bytes to a float32 array `[frames, channels]` and its sample rate.

    `where` (e.g. "shard.tar:key") is put into the error so a bad sample can be found.
    """
    if not data:
        raise AudioDecodeError(f"{where}: empty .{ext} member")
    try:
        audio, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError... on bad bytes
        raise AudioDecodeError(f"{where}: cannot decode .{ext} audio ({type(e).__name__}: {e})") from e
    return audio, int(sample_rate)


def audio_problem(
    audio: np.ndarray | torch.Tensor, sample_rate: int | None = None, min_seconds: float = 0.0
) -> str | None:
    """Why this audio is unusable for training, or None if it is fine.

    Reasons: "empty_audio" (no frames), "nonfinite_audio" (NaN/inf samples), "silent_audio" (all zeros),
    "too_short" (shorter than `min_seconds`; needs `sample_rate`).
    """
    a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    frames = a.shape[0] if a.ndim else 0
    if a.size == 0 or frames == 0:
        return "empty_audio"
    if not np.isfinite(a).all():
        return "nonfinite_audio"
    if not np.any(a):
        return "silent_audio"
    if sample_rate and min_seconds > 0 and frames < min_seconds * sample_rate:
        return "too_short"
    return None


_RESAMPLERS: dict[tuple[int, int], torchaudio.transforms.Resample] = {}


def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """One Resample module (its sinc kernel computed once) per (source, target) rate, per process."""
    key = (orig, new)
    if key not in _RESAMPLERS:
        _RESAMPLERS[key] = torchaudio.transforms.Resample(orig, new)
    return _RESAMPLERS[key]


def to_mono_16k(audio: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Float32 mono waveform `[T]` at 16 kHz from `[frames]` or `[frames, channels]` audio of any rate.

    Channels are averaged (not summed), so a stereo file keeps its loudness.
    """
    if sample_rate <= 0:
        raise ValueError(f"invalid sample rate {sample_rate}")
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
