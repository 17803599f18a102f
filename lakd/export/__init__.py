"""Export a trained checkpoint for use without lakd: ONNX / TorchScript (`lakd.export.onnx`) and a Hugging Face
directory that transformers alone loads (`lakd.export.hf`, model card in `lakd.export.card`).

    lakd export --checkpoint runs/demo/student/best --out student.onnx            # ONNX (default)
    lakd export --checkpoint runs/demo/student/best --out hf/student --format hf  # transformers / the hub
"""

from __future__ import annotations

FORMATS = ("onnx", "torchscript", "hf")


def export_model(checkpoint, out, fmt: str = "onnx", **options) -> dict:
    """Export `checkpoint` as `fmt` (onnx | torchscript | hf); returns what was written and verified."""
    if fmt in ("onnx", "torchscript"):
        from lakd.export.onnx import export_graph

        return export_graph(checkpoint, out, fmt=fmt, **options)
    if fmt == "hf":
        from lakd.export.hf import export_hf

        return export_hf(checkpoint, out, **options)
    raise ValueError(f"unknown export format {fmt!r} ({' | '.join(FORMATS)})")
