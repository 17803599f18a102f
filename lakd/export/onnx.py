"""ONNX and TorchScript export, each checked against PyTorch on inputs of another length than the traced one.

The graph takes raw 16 kHz audio (`input_values [B, T]`, `attention_mask [B, T]`, and for a language-aware
model `language_ids [B]`, index into the languages, -1 = unknown) and returns `probabilities [B, C]`, plus
`logits [B, C]` with `logits=True`. Audio normalisation, if the model uses it, is inside the graph.
The ONNX file's `metadata_props` carry what a runtime needs to use it: labels, languages, sample rate,
the shortest usable input and the output names (all JSON or plain strings).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lakd import SAMPLE_RATE, __version__

MAX_DIFF = 1e-3  # an export that disagrees more with PyTorch is refused


class _ExportWrapper(torch.nn.Module):
    def __init__(self, model, logits: bool):
        super().__init__()
        self.model = model
        self.with_logits = logits

    def forward(self, input_values, attention_mask, language_ids):
        logits = self.model(input_values, attention_mask, language_ids).logits
        probs = torch.softmax(logits, -1)
        return (probs, logits) if self.with_logits else probs


def graph_metadata(predictor, outputs: list[str]) -> dict[str, str]:
    """The `metadata_props` of an exported graph: strings only (ONNX's rule), lists as JSON."""
    model = predictor.model
    return {
        "lakd_version": __version__,
        "labels": json.dumps(predictor.labels),
        "languages": json.dumps(predictor.languages),
        "language_ids": "index into languages; -1 = unknown language (shared embedding)"
        if model.language_embedding is not None
        else "not used (the model is not language-aware)",
        "sample_rate": str(SAMPLE_RATE),
        "min_samples": str(predictor.min_samples),
        "input": "raw mono float32 audio in [-1, 1], right-padded with attention_mask = 0",
        "outputs": json.dumps(outputs),
        "family": model.cfg.family,
        "normalize_audio": str(bool(model.cfg.normalize_audio)).lower(),
    }


def _as_list(out) -> list[np.ndarray]:
    return [o.numpy() for o in out] if isinstance(out, tuple) else [out.numpy()]


def export_graph(checkpoint, out, fmt: str = "onnx", seconds: float = 2.0, logits: bool = False) -> dict:
    """Export to ONNX (checked with onnxruntime) or TorchScript. Returns what was written and verified."""
    from lakd.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    wrapper = _ExportWrapper(predictor.model, logits).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, int(SAMPLE_RATE * seconds), generator=g)
    mask = torch.ones(2, x.shape[1], dtype=torch.long)
    mask[1, x.shape[1] // 2 :] = 0
    x[1, x.shape[1] // 2 :] = 0
    lang = torch.tensor([0, -1])
    # check on a different length than the one traced, to prove the dynamic axes work
    short = int(SAMPLE_RATE * seconds * 0.75)
    x2, mask2 = x[:, :short].contiguous(), mask[:, :short].contiguous()
    with torch.no_grad():
        ref = _as_list(wrapper(x2, mask2, lang))
    outputs = ["probabilities", "logits"] if logits else ["probabilities"]
    info = {
        "format": fmt,
        "path": str(out),
        "labels": predictor.labels,
        "languages": predictor.languages,
        "outputs": outputs,
    }
    tmp = out.with_name(out.name + ".tmp")
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        axes = {"input_values": {0: "batch", 1: "samples"}, "attention_mask": {0: "batch", 1: "samples"}}
        axes |= {"language_ids": {0: "batch"}} | {name: {0: "batch"} for name in outputs}
        torch.onnx.export(
            wrapper,
            (x, mask, lang),
            str(tmp),
            input_names=["input_values", "attention_mask", "language_ids"],
            output_names=outputs,
            dynamo=False,
            opset_version=17,
            dynamic_axes=axes,
        )
        graph = onnx.load(str(tmp))
        onnx.helper.set_model_props(graph, graph_metadata(predictor, outputs))
        onnx.save(graph, str(tmp))
        tmp.replace(out)
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        feeds = {"input_values": x2.numpy(), "attention_mask": mask2.numpy(), "language_ids": lang.numpy()}
        used = {i.name for i in sess.get_inputs()}  # a teacher ignores language_ids: the exporter drops it
        got = sess.run(outputs, {k: v for k, v in feeds.items() if k in used})
        info["inputs"] = sorted(used)
        info["metadata"] = dict(sess.get_modelmeta().custom_metadata_map)
    elif fmt == "torchscript":
        traced = torch.jit.trace(wrapper, (x, mask, lang), check_trace=False)
        traced.save(str(tmp), _extra_files={"lakd.json": json.dumps(graph_metadata(predictor, outputs))})
        tmp.replace(out)
        with torch.no_grad():
            got = _as_list(torch.jit.load(str(out))(x2, mask2, lang))
    else:
        raise ValueError(f"unknown export format {fmt!r} (onnx | torchscript)")
    info["max_abs_diff_vs_torch"] = float(max(np.abs(a - b).max() for a, b in zip(got, ref)))
    if info["max_abs_diff_vs_torch"] > MAX_DIFF:
        raise RuntimeError(
            f"{fmt} export of {checkpoint} disagrees with PyTorch by {info['max_abs_diff_vs_torch']:.2e}"
        )
    (out.with_suffix(out.suffix + ".json")).write_text(json.dumps(info, indent=1))
    return info
