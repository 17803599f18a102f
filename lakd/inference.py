"""Use a trained model: `lakd.load(path).predict(waveform, sample_rate, language=None)`.

A checkpoint directory is self-describing (labels, languages, model config in lakd.json), so inference
needs nothing from the training run. `predict` takes audio as the usual readers return it:

- `soundfile.read` -> `[frames]` or `[frames, channels]` (numpy), `torchaudio.load` -> `[channels, frames]` (tensor);
  the channel axis is the short one (at most `MAX_CHANNELS`), channels are averaged;
- float audio in [-1, 1] or integer PCM (int16 / int32 / int8 / uint8), scaled to [-1, 1);
- any sample rate (resampled to 16 kHz);
- one utterance (returns a dict) or a list of utterances (returns a list of dicts, run in padded batches).

Exporting to ONNX / TorchScript / a Hugging Face directory lives in `lakd.export`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lakd import SAMPLE_RATE

MAX_CHANNELS = 32  # a 2-D array whose both axes are longer than this is not audio we can read
UNKNOWN_LANGUAGE = "unknown"  # explicit "I don't know the language": the model's shared "any" embedding
_UNKNOWN_NAMES = (None, "", UNKNOWN_LANGUAGE, "any")
_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.int8): 128.0}


def to_float_frames(audio, where: str = "audio") -> np.ndarray:
    """Audio as float32 `[frames]` or `[frames, channels]` from any common layout and sample format."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    a = np.asarray(audio)
    if a.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif a.dtype in _INT_SCALE:
        a = a.astype(np.float32) / _INT_SCALE[a.dtype]
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32, copy=False)
    else:
        raise ValueError(f"{where}: unsupported sample type {a.dtype} (use float, int16, int32, int8 or uint8)")
    if a.ndim == 1:
        return a
    if a.ndim != 2:
        raise ValueError(f"{where}: expected [frames], [frames, channels] or [channels, frames], got shape {a.shape}")
    rows, cols = a.shape
    if rows <= MAX_CHANNELS and rows < cols:  # torchaudio.load: [channels, frames]
        return a.T
    if cols <= MAX_CHANNELS and cols < rows:  # soundfile.read: [frames, channels]
        return a
    raise ValueError(
        f"{where}: cannot tell channels from frames in shape {a.shape} "
        f"(the channel axis must be the shorter one, at most {MAX_CHANNELS})"
    )


def receptive_field(backbone) -> int:
    """Fewest 16 kHz samples from which the backbone's conv feature encoder makes one frame."""
    cfg = backbone.config
    need = 1
    for kernel, stride in reversed(list(zip(cfg.conv_kernel, cfg.conv_stride))):
        need = (need - 1) * stride + kernel
    return need


def _is_batch(waveform) -> bool:
    """A list/tuple of utterances (not a plain list of sample values)."""
    return isinstance(waveform, (list, tuple)) and len(waveform) > 0 and not isinstance(waveform[0], numbers.Number)


class Predictor:
    """Class probabilities for raw audio of any sample rate, layout and channel count."""

    def __init__(self, model, device="cpu", batch_size: int = 8):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but CUDA is not available here (use --device cpu or auto)")
        self.model = model.eval().to(device)
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.labels: list[str] = list(model.labels)
        self.languages: list[str] = list(model.languages)
        self.min_samples = receptive_field(model.backbone)

    @classmethod
    def from_checkpoint(cls, path, device="cpu") -> Predictor:
        """Load a checkpoint directory (or a run directory holding `best/`); `CheckpointError` names the problem."""
        from lakd.models.backbone import BackboneError
        from lakd.models.ser import META_NAME, CheckpointError, SERModel

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such checkpoint directory")
        if not (path / META_NAME).exists() and (path / "best" / META_NAME).exists():
            path = path / "best"  # a run directory: take its selected model
        try:
            return cls(SERModel.from_pretrained(path), device=device)
        except BackboneError as e:
            raise CheckpointError(str(e)) from e

    def language_id(self, language: str | None) -> int:
        """Index of a language code; None / "unknown" / "any" select the shared "any" embedding (-1).

        A code the model was not trained on is an error (a typo must not silently drop the language)."""
        if language in _UNKNOWN_NAMES:
            return -1
        if language in self.languages:
            return self.languages.index(language)
        raise ValueError(
            f"unknown language {language!r}: this model knows {', '.join(self.languages)} "
            f"(use language=None or {UNKNOWN_LANGUAGE!r} when the language is not known)"
        )

    def prepare(self, waveform, sample_rate: int, where: str = "audio") -> torch.Tensor:
        """Mono float32 `[T]` at 16 kHz, checked to be long enough for the model."""
        from lakd.data.audio import to_mono_16k

        frames = to_float_frames(waveform, where)
        if frames.shape[0] == 0:
            raise ValueError(f"{where}: audio is empty")
        audio = to_mono_16k(frames, int(sample_rate))
        if audio.numel() < self.min_samples:
            raise ValueError(
                f"{where}: audio is {1000 * audio.numel() / SAMPLE_RATE:.1f} ms long; this model needs at least "
                f"{self.min_samples} samples at 16 kHz ({1000 * self.min_samples / SAMPLE_RATE:.1f} ms, "
                "the receptive field of its feature encoder)"
            )
        return audio

    @torch.no_grad()
    def _probabilities(self, audios: list[torch.Tensor], lang_ids: list[int]) -> list[list[float]]:
        """Run in padded batches, longest first; a group-norm backbone (which padding would change) goes one by one."""
        step = self.batch_size if self.model.pass_attention_mask else 1
        order = sorted(range(len(audios)), key=lambda i: -audios[i].numel())
        out: list[list[float]] = [[] for _ in audios]
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            longest = audios[idx[0]].numel()
            x = torch.zeros(len(idx), longest)
            mask = torch.zeros(len(idx), longest, dtype=torch.long)
            for row, i in enumerate(idx):
                x[row, : audios[i].numel()] = audios[i]
                mask[row, : audios[i].numel()] = 1
            lang = torch.tensor([lang_ids[i] for i in idx])
            logits = self.model(x.to(self.device), mask.to(self.device), lang.to(self.device)).logits
            for row, p in zip(idx, torch.softmax(logits.float(), -1).cpu().tolist()):
                out[row] = p
        return out

    def predict(self, waveform, sample_rate: int, language: str | None | Sequence[str | None] = None):
        """{label: probability} for one utterance, or a list of them for a list of utterances.

        For a batch, `language` is one code for all or one per utterance; `sample_rate` one rate or one per utterance.
        """
        if not _is_batch(waveform):
            audio = self.prepare(waveform, sample_rate)
            return dict(zip(self.labels, self._probabilities([audio], [self.language_id(language)])[0]))
        n = len(waveform)
        rates = list(sample_rate) if isinstance(sample_rate, (list, tuple)) else [sample_rate] * n
        langs = list(language) if isinstance(language, (list, tuple)) else [language] * n
        if len(rates) != n or len(langs) != n:
            raise ValueError(f"{n} utterances but {len(rates)} sample rates and {len(langs)} languages")
        audios = [self.prepare(w, r, f"utterance {i}") for i, (w, r) in enumerate(zip(waveform, rates))]
        probs = self._probabilities(audios, [self.language_id(l) for l in langs])
        return [dict(zip(self.labels, p)) for p in probs]

    def predict_file(self, path, language: str | None = None) -> dict[str, float]:
        import soundfile as sf

        try:
            audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
        except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError ... on bad files
            raise ValueError(f"{path}: cannot read audio ({e})") from e
        prepared = self.prepare(audio, sr, where=str(path))
        return dict(zip(self.labels, self._probabilities([prepared], [self.language_id(language)])[0]))
