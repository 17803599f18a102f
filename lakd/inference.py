"""Use a trained model: `lakd.load(path).predict(waveform, sample_rate, language=None)` and export to ONNX.

A checkpoint directory is self-describing (labels, languages, model config in lakd.json), so inference
needs nothing from the training run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class Predictor:
    """Class probabilities for raw audio of any sample rate and channel count."""

    def __init__(self, model, device="cpu"):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.labels: list[str] = list(model.labels)
        self.languages: list[str] = list(model.languages)

    @classmethod
    def from_checkpoint(cls, path, device="cpu") -> Predictor:
        from lakd.models.ser import SERModel

        path = Path(path)
        if not (path / "lakd.json").exists() and (path / "best" / "lakd.json").exists():
            path = path / "best"  # a run directory: take its selected model
        return cls(SERModel.from_pretrained(path), device=device)

    def language_id(self, language: str | None) -> int:
        """Index of a language; unknown or missing languages use the shared 'any' embedding (-1)."""
        return self.languages.index(language) if language in self.languages else -1

    @torch.no_grad()
    def predict(self, waveform, sample_rate: int, language: str | None = None) -> dict[str, float]:
        from lakd.data.audio import to_mono_16k

        audio = to_mono_16k(np.asarray(waveform, dtype=np.float32), sample_rate)
        x = torch.as_tensor(audio, dtype=torch.float32, device=self.device).reshape(1, -1)
        mask = torch.ones_like(x, dtype=torch.long)
        lang = torch.tensor([self.language_id(language)], device=self.device)
        probs = torch.softmax(self.model(x, mask, lang).logits.float(), -1)[0].cpu().tolist()
        return dict(zip(self.labels, probs))

    def predict_file(self, path, language: str | None = None) -> dict[str, float]:
        import soundfile as sf

        try:
            audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
        except Exception as e:
            raise ValueError(f"{path}: cannot read audio ({e})") from e
        if audio.size == 0:
            raise ValueError(f"{path}: audio is empty")
        return self.predict(audio, sr, language)


class _ExportWrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_values, attention_mask, language_ids):
        return torch.softmax(self.model(input_values, attention_mask, language_ids).logits, -1)


def export_model(checkpoint, out, fmt: str = "onnx", seconds: float = 2.0) -> dict:
    """Export to ONNX (checked against PyTorch with onnxruntime) or TorchScript. Returns what was verified."""
    predictor = Predictor.from_checkpoint(checkpoint)
    wrapper = _ExportWrapper(predictor.model).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, int(16000 * seconds), generator=g)
    mask = torch.ones(2, x.shape[1], dtype=torch.long)
    mask[1, x.shape[1] // 2 :] = 0
    x[1, x.shape[1] // 2 :] = 0
    lang = torch.tensor([0, -1])
    with torch.no_grad():
        ref = wrapper(x, mask, lang).numpy()
    info = {"format": fmt, "path": str(out), "labels": predictor.labels, "languages": predictor.languages}
    if fmt == "onnx":
        import onnxruntime as ort

        tmp = out.with_name(out.name + ".tmp")
        torch.onnx.export(
            wrapper,
            (x, mask, lang),
            str(tmp),
            input_names=["input_values", "attention_mask", "language_ids"],
            output_names=["probabilities"],
            dynamo=False,
            opset_version=17,
            dynamic_axes={
                "input_values": {0: "batch", 1: "samples"},
                "attention_mask": {0: "batch", 1: "samples"},
                "language_ids": {0: "batch"},
                "probabilities": {0: "batch"},
            },
        )
        tmp.replace(out)
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        # check on a different length than the one traced, to prove the dynamic axes work
        x2, mask2 = (
            x[:, : int(16000 * seconds * 0.75)].contiguous(),
            mask[:, : int(16000 * seconds * 0.75)].contiguous(),
        )
        with torch.no_grad():
            ref2 = wrapper(x2, mask2, lang).numpy()
        feeds = {"input_values": x2.numpy(), "attention_mask": mask2.numpy(), "language_ids": lang.numpy()}
        used = {i.name for i in sess.get_inputs()}  # a teacher ignores language_ids: the exporter drops it
        got = sess.run(None, {k: v for k, v in feeds.items() if k in used})[0]
        info["inputs"] = sorted(used)
        info["max_abs_diff_vs_torch"] = float(np.abs(got - ref2).max())
        if info["max_abs_diff_vs_torch"] > 1e-3:
            raise RuntimeError(
                f"ONNX export of {checkpoint} disagrees with PyTorch by {info['max_abs_diff_vs_torch']:.2e}"
            )
    elif fmt == "torchscript":
        traced = torch.jit.trace(wrapper, (x, mask, lang), check_trace=False)
        tmp = out.with_name(out.name + ".tmp")
        traced.save(str(tmp))
        tmp.replace(out)
        loaded = torch.jit.load(str(out))
        with torch.no_grad():
            info["max_abs_diff_vs_torch"] = float(np.abs(loaded(x, mask, lang).numpy() - ref).max())
    else:
        raise ValueError(f"unknown export format {fmt!r} (onnx | torchscript)")
    (out.with_suffix(out.suffix + ".json")).write_text(json.dumps(info, indent=1))
    return info
