"""Measuring prosody in audio (F0, loudness, voicing): to check that synthetic emotions differ as intended."""

from __future__ import annotations

import numpy as np


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
