"""`lakd evaluate`, `lakd predict` and `lakd export`: the commands that use a trained checkpoint.

A checkpoint that cannot be loaded is one error line, not a traceback. `predict` reports each unreadable file
and still predicts the others, then exits 1 if any failed.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lakd.cli_common import DeviceOpt, console, err_console, fail

CheckpointOpt = typer.Option(
    ..., "--checkpoint", help="A checkpoint directory (…/best) or a run directory holding best/."
)


def _checkpoint_dir(path: Path) -> Path:
    """A checkpoint directory, or the `best/` of a run directory given instead."""
    if not (path / "lakd.json").exists() and (path / "best" / "lakd.json").exists():
        return path / "best"
    return path


def _load_predictor(checkpoint: Path, device: str):
    import lakd
    from lakd.models.ser import CheckpointError

    try:
        return lakd.load(checkpoint, device=device)
    except (CheckpointError, OSError) as e:
        fail(f"cannot load checkpoint: {e}")
    except ValueError as e:  # e.g. --device cuda without CUDA
        fail(str(e), code=2)


def evaluate_cmd(
    checkpoint: Path = CheckpointOpt,
    shards: list[str] = typer.Option(..., help="Evaluation shards: directory, pattern or list."),
    out: Path | None = typer.Option(None, help="Report directory (default: <checkpoint>/../eval)."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for 95% confidence intervals."),
    device: str = DeviceOpt,
) -> None:
    """WA / UA per language and overall, per-class recall / precision / F1, confusion matrices (PNG), bootstrap CIs."""
    from lakd.models.ser import CheckpointError
    from lakd.recipes.evaluate import evaluate_checkpoint

    try:
        report = evaluate_checkpoint(
            _checkpoint_dir(checkpoint), shards, out_dir=out, n_bootstrap=bootstrap, device=device
        )
    except (CheckpointError, FileNotFoundError) as e:
        fail(str(e))
    console.print(report["markdown"])
    console.print(f"report written to {report['out_dir']}")


def predict_cmd(
    files: list[Path] = typer.Argument(..., help="Audio files (wav, flac, ogg …)."),
    checkpoint: Path = CheckpointOpt,
    language: str | None = typer.Option(
        None, help="ISO code of the utterances' language; leave unset (or 'unknown') when it is not known."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table (failed files carry 'error')."),
    device: str = DeviceOpt,
) -> None:
    """Class probabilities for audio files; an unreadable file is reported and the others are still predicted."""
    from rich.table import Table

    predictor = _load_predictor(checkpoint, device)
    try:
        predictor.language_id(language)
    except ValueError as e:
        fail(str(e), code=2)
    rows, failed = [], 0
    for f in files:
        try:
            probs = predictor.predict_file(f, language=language)
        except (ValueError, OSError) as e:  # a bad file must not hide the others' results
            failed += 1
            err_console.print(f"[red]error:[/red] {e}" if str(f) in str(e) else f"[red]error:[/red] {f}: {e}")
            rows.append({"file": str(f), "error": str(e)})
            continue
        rows.append({"file": str(f), "prediction": max(probs, key=probs.get), "probabilities": probs})
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        table = Table("file", "prediction", *predictor.labels)
        for r in rows:
            if "error" in r:
                table.add_row(r["file"], "[red]unreadable[/red]", *["–"] * len(predictor.labels))
            else:
                table.add_row(r["file"], r["prediction"], *[f"{r['probabilities'][l]:.3f}" for l in predictor.labels])
        console.print(table)
    if failed:
        err_console.print(f"{failed} of {len(files)} files could not be predicted")
        raise typer.Exit(1)


def export_cmd(
    checkpoint: Path = CheckpointOpt,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output file (onnx, torchscript) or directory (hf), replaced if it exists."
    ),
    format: str = typer.Option("onnx", help="onnx | torchscript | hf (a directory transformers loads)."),
    logits: bool = typer.Option(False, "--logits", help="onnx / torchscript: output logits beside probabilities."),
    report: Path | None = typer.Option(
        None, help="hf: evaluation report (metrics.json or its directory) for the model card (default: searched)."
    ),
    license: str | None = typer.Option(None, help="hf: license id for the model card, e.g. apache-2.0."),
) -> None:
    """Export a checkpoint: ONNX (checked with onnxruntime), TorchScript, or a Hugging Face directory."""
    from lakd.export import FORMATS, export_model
    from lakd.models.ser import CheckpointError

    if format not in FORMATS:
        fail(f"unknown export format {format!r} ({' | '.join(FORMATS)})", code=2)
    options = {"report": report, "license": license} if format == "hf" else {"logits": logits}
    try:
        info = export_model(checkpoint, out, fmt=format, **options)
    except (CheckpointError, FileNotFoundError) as e:
        fail(str(e))
    console.print_json(json.dumps(info, default=str))
