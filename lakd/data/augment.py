"""Waveform augmentation of training crops, in the loader's workers (see docs/training.md#augmentation).

Why: SER models fail most on voices, rooms and recording chains they have not heard; perturbing the training
audio (speed, noise, gain, reverberation, band limits) makes the student see more of them. Only training crops
are augmented (`lakd.data.streams` calls `Augmenter.apply` on the training stream only): evaluation and the
teacher-knowledge cache read clean audio.

Determinism: each sample's random generators are seeded from (config seed, epoch, sample key), so the same
sample in the same epoch gets the same transforms and parameters whatever the worker count or stream order.
The one exception is babble, whose *content* is made of the other utterances the worker saw just before.

The transforms are plain functions of a float32 [T] tensor at 16 kHz, so tests can check each one's effect
on a known signal. Order in a sample: speed -> reverberation -> noise -> band limit -> gain.
"""

from __future__ import annotations

import io
import math
import os
import random
import tarfile
from collections import deque
from dataclasses import dataclass

import soundfile as sf
import torch
import torchaudio.functional as AF

from lakd import SAMPLE_RATE
from lakd.data.audio import to_mono_16k

NOISE_COLOURS = ("white", "pink", "brown")  # exponent of the 1/f^beta power spectrum: 0, 1, 2
NOISE_EXTENSIONS = (".wav", ".flac", ".ogg")
BABBLE_TALKERS = (3, 6)  # other utterances summed into one babble noise


# ---------------------------------------------------------------------------------------------- transforms
def speed(wav: torch.Tensor, factor: float, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Play `factor` times faster by resampling: duration / factor, and every frequency (pitch, formants) x factor.

    This is the Kaldi/ESPnet "speed perturbation", not a pitch-preserving tempo change: F0 moves with it.
    """
    if factor == 1.0:
        return wav
    return AF.resample(wav, int(round(sr * factor)), sr)


def gain(wav: torch.Tensor, db: float) -> torch.Tensor:
    """Scale by `db` decibels (RMS and peak change by exactly that)."""
    return wav * (10.0 ** (db / 20.0))


def coloured_noise(n: int, colour: str, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise with a 1/f^beta power spectrum (white 0, pink 1, brown 2), zero mean, unit RMS."""
    beta = NOISE_COLOURS.index(colour)
    white = torch.randn(n, generator=gen)
    if beta == 0:
        return white / white.pow(2).mean().sqrt()
    spec = torch.fft.rfft(white)
    f = torch.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    noise = torch.fft.irfft(spec / f.pow(beta / 2), n=n)
    noise = noise - noise.mean()
    return noise / noise.pow(2).mean().sqrt().clamp_min(1e-12)


def add_noise(wav: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """`wav` + `noise` scaled so that 10 log10(P_wav / P_noise) = `snr_db` (noise tiled or cut to length)."""
    if noise.numel() < wav.numel():
        noise = noise.repeat(math.ceil(wav.numel() / noise.numel()))
    noise = noise[: wav.numel()]
    p_sig = wav.pow(2).mean()
    p_noise = noise.pow(2).mean().clamp_min(1e-20)
    return wav + noise * torch.sqrt(p_sig / (p_noise * 10.0 ** (snr_db / 10.0)))


def synthetic_rir(rt60: float, gen: torch.Generator, drr_db: float = 3.0, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """A room impulse response: a direct-path impulse, then exponentially decaying Gaussian noise.

    The tail's envelope is exp(-6.91 t / rt60), so its energy falls by 60 dB at t = rt60 (the definition of
    RT60); it starts 2.5 ms after the direct path and lasts 1.2 x rt60. `drr_db` is the direct-to-reverberant
    energy ratio. This is the usual statistical model of late reverberation (no early reflections, no room
    geometry): enough to smear and colour speech the way rooms do, with one interpretable parameter.
    """
    delay = int(0.0025 * sr)
    n = max(1, int(1.2 * rt60 * sr))
    t = torch.arange(n, dtype=torch.float32) / sr
    tail = torch.randn(n, generator=gen) * torch.exp(-6.9078 * t / rt60)
    tail = tail * math.sqrt(10.0 ** (-drr_db / 10.0) / float(tail.pow(2).sum()))
    rir = torch.zeros(delay + n)
    rir[0] = 1.0
    rir[delay:] += tail
    return rir


def reverberate(wav: torch.Tensor, rir: torch.Tensor, keep_length: bool = True) -> torch.Tensor:
    """Convolve with `rir`; rescaled to the input's RMS. `keep_length` cuts the tail to the input's length."""
    n = wav.numel() + rir.numel() - 1
    size = 1 << (n - 1).bit_length()  # a power-of-two FFT: ~1.6x faster than torchaudio's fftconvolve at n
    out = torch.fft.irfft(torch.fft.rfft(wav, size) * torch.fft.rfft(rir, size), size)[:n]
    if keep_length:
        out = out[: wav.numel()]
    rms_in, rms_out = wav.pow(2).mean().sqrt(), out.pow(2).mean().sqrt().clamp_min(1e-12)
    return out * (rms_in / rms_out)


def lowpass(wav: torch.Tensor, cutoff_hz: float, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Two cascaded Butterworth-Q biquads: -6 dB at `cutoff_hz`, about -24 dB an octave above."""
    return AF.lowpass_biquad(AF.lowpass_biquad(wav, sr, cutoff_hz), sr, cutoff_hz)


def highpass(wav: torch.Tensor, cutoff_hz: float, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Two cascaded Butterworth-Q biquads: -6 dB at `cutoff_hz`, about -24 dB an octave below."""
    return AF.highpass_biquad(AF.highpass_biquad(wav, sr, cutoff_hz), sr, cutoff_hz)


def telephone(wav: torch.Tensor, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Narrow-band telephone channel: down to 8 kHz and back (nothing above 4 kHz), then high-pass at 300 Hz."""
    narrow = AF.resample(AF.resample(wav, sr, 8000), 8000, sr)[: wav.numel()]
    return highpass(narrow, 300.0, sr)


@dataclass(frozen=True)
class NoiseClip:
    """One noise recording: an audio file, or an audio member of a tar shard (its bytes at `offset`, `size` long)."""

    path: str
    member: str | None = None
    offset: int = 0
    size: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path


def noise_files(directory: str) -> list[NoiseClip]:
    """The noise recordings under `directory`, recursively, in a fixed (sorted) order: audio files (wav, flac,
    ogg), and each audio member of the tar shards there (lakd's shard format, or any tar of audio files, e.g.
    MUSAN packed with `lakd shards` or plain `tar`). A shard's members are located once, read by offset."""
    found: list[NoiseClip] = []
    for root, _, files in os.walk(directory):
        for f in sorted(files):
            path = os.path.join(root, f)
            if f.lower().endswith(NOISE_EXTENSIONS):
                found.append(NoiseClip(path))
            elif f.lower().endswith(".tar"):
                with tarfile.open(path) as tar:
                    found += [
                        NoiseClip(path, m.name, m.offset_data, m.size)
                        for m in tar.getmembers()
                        if m.isfile() and m.name.lower().endswith(NOISE_EXTENSIONS)
                    ]
    return sorted(found, key=lambda c: (c.path, c.member or ""))


def read_noise_segment(clip: NoiseClip | str, n: int, rng: random.Random) -> torch.Tensor:
    """A random segment of about `n` samples at 16 kHz mono from one noise recording, read with soundfile."""
    if isinstance(clip, str):
        clip = NoiseClip(clip)
    if clip.member is None:
        info = sf.info(clip.path)
        want = int(math.ceil(n * info.samplerate / SAMPLE_RATE))
        start = rng.randint(0, max(0, info.frames - want))
        audio, sr = sf.read(clip.path, start=start, frames=want, dtype="float32", always_2d=False)
        return to_mono_16k(audio, sr)
    with open(clip.path, "rb") as f:  # a shard member: decode the clip (clips are short), then cut the segment
        f.seek(clip.offset)
        audio, sr = sf.read(io.BytesIO(f.read(clip.size)), dtype="float32", always_2d=False)
    wav = to_mono_16k(audio, sr)
    start = rng.randint(0, max(0, wav.numel() - n))
    return wav[start : start + n]


# ---------------------------------------------------------------------------------------------- the pipeline
class Augmenter:
    """The transforms of one run's `data.augment` config, applied to one training crop at a time.

    Each transform fires with its own probability (`*_prob`); a sample's draws come from generators seeded
    by `sample_seed` (the loader passes stable_seed(seed, epoch, "augment", key)). Babble is made from the
    last `babble` clean crops the worker saw (another utterance, never the sample itself); before the worker
    has seen any, babble falls back to pink noise. The output is cut to `max_samples` (a slowed-down crop
    grows) and scaled down if its peak would exceed 1.
    """

    def __init__(self, cfg, max_samples: int | None = None):
        self.cfg = cfg
        self.max_samples = max_samples
        self.recent: deque = deque(maxlen=8)
        self._files: list[str] | None = None

    @property
    def active(self) -> bool:
        c = self.cfg
        return any(p > 0 for p in (c.speed_prob, c.noise_prob, c.gain_prob, c.reverb_prob, c.bandlimit_prob))

    def files(self) -> list[NoiseClip]:
        if self._files is None:
            self._files = noise_files(self.cfg.noise_dir) if self.cfg.noise_dir else []
            if self.cfg.noise_dir and not self._files:
                raise FileNotFoundError(
                    f"data.augment.noise_dir {self.cfg.noise_dir}: no .wav/.flac/.ogg files and no .tar shards of them"
                )
        return self._files

    def apply(self, wav: torch.Tensor, key: str, sample_seed: int) -> torch.Tensor:
        """The augmented copy of one clean crop `wav` (float32 [T], 16 kHz) of sample `key`."""
        c = self.cfg
        rng = random.Random(sample_seed)
        gen = torch.Generator().manual_seed(sample_seed % (1 << 63))
        clean = wav
        out = wav
        if rng.random() < c.speed_prob:
            out = speed(out, float(rng.choice(c.speed_factors)))
            if self.max_samples is not None and out.numel() > self.max_samples:
                out = out[: self.max_samples]
        if rng.random() < c.reverb_prob:
            rir = synthetic_rir(rng.uniform(*c.reverb_rt60), gen, rng.uniform(*c.reverb_drr_db))
            out = reverberate(out, rir)
        if rng.random() < c.noise_prob:
            out = add_noise(
                out, self._noise(rng.choice(c.noise_types), out.numel(), key, rng, gen), rng.uniform(*c.noise_snr_db)
            )
        if rng.random() < c.bandlimit_prob:
            kind = rng.choice(c.bandlimit_types)
            if kind == "lowpass":
                out = lowpass(out, rng.uniform(*c.lowpass_hz))
            elif kind == "highpass":
                out = highpass(out, rng.uniform(*c.highpass_hz))
            else:
                out = telephone(out)
        if rng.random() < c.gain_prob:
            out = gain(out, rng.uniform(*c.gain_db))
        peak = float(out.abs().max()) if out.numel() else 0.0
        if peak > 1.0:
            out = out / peak
        self.recent.append((key, clean))
        return out.contiguous().to(torch.float32)

    def _noise(self, kind: str, n: int, key: str, rng: random.Random, gen: torch.Generator) -> torch.Tensor:
        if kind in NOISE_COLOURS:
            return coloured_noise(n, kind, gen)
        if kind == "file":
            return read_noise_segment(rng.choice(self.files()), n, rng)
        others = [w for k, w in self.recent if k != key]  # babble
        if not others:
            return coloured_noise(n, "pink", gen)
        babble = torch.zeros(n)
        for _ in range(rng.randint(*BABBLE_TALKERS)):
            w = rng.choice(others)
            w = w.repeat(math.ceil(n / w.numel())) if w.numel() < n else w
            start = rng.randint(0, w.numel() - n)
            seg = w[start : start + n]
            babble += seg / seg.pow(2).mean().sqrt().clamp_min(1e-12)
        return babble


def augment_for(data_cfg, role: str):
    """`data_cfg` for a training of `role` (teachers | student): unchanged when `data.augment.apply_to` names the
    role, else a copy with augmentation (and mixup) off. Only the training loader and loss read it."""
    from dataclasses import replace

    from lakd.config.schema import AugmentConfig

    return data_cfg if role in data_cfg.augment.apply_to else replace(data_cfg, augment=AugmentConfig())
