"""Export a trained checkpoint for use without lakd: ONNX / TorchScript (`lakd.export.onnx`).

    lakd export --checkpoint runs/demo/student/best --out student.onnx            # ONNX (default)
"""

from __future__ import annotations

FORMATS = ("onnx", "torchscript")


def export_model(checkpoint, out, fmt: str = "onnx", **options) -> dict:
    """Export `checkpoint` as `fmt` (onnx | torchscript); returns what was written and verified."""
    if fmt in ("onnx", "torchscript"):
        from lakd.export.onnx import export_graph

        return export_graph(checkpoint, out, fmt=fmt, **options)
    raise ValueError(f"unknown export format {fmt!r} ({' | '.join(FORMATS)})")
