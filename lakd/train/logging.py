"""Run logging: W&B (online / offline / disabled), an always-on `metrics.jsonl`, and short console lines.

`metrics.jsonl` (one JSON object per line, in the run directory) is the source of truth that needs no
service: `lakd status` reads its last line, plots read all of it. Each line has ``step`` and ``time`` (unix
seconds) plus the logged values (``train/loss``, ``train/lr``, ``dev/ua``, ...) or an ``event`` name.

W&B offline runs of every stage of a run land in one folder, ``<run_dir>/wandb/`` (the recipes pass the
experiment's run directory as ``wandb_dir``; upload later with ``wandb sync <run_dir>/wandb/offline-run-*``).
W&B's own environment variables win over the config, as W&B users expect (`wandb_settings`): WANDB_MODE,
WANDB_PROJECT, WANDB_ENTITY, WANDB_DIR, and WANDB_RUN_ID (which `wandb agent` sets for a sweep's run).
The W&B run id is kept in ``<run_dir>/wandb_run_id`` so a resumed or requeued job continues the same run;
every value is logged against the custom x-axis ``trainer/step`` so repeated steps after a resume do not
trip W&B's monotonic-step check. Beside scalars, W&B gets images (confusion matrices), tables, confusion-matrix
charts and artifacts (`log_images`, `log_table`, `log_confusion_matrix`, `log_artifact`: no-ops without W&B;
`lakd.eval.tracking` turns an evaluation report into these).

Only the main process logs: pass ``enabled_on_rank0=dist.is_main``; on other ranks every method is a no-op.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lakd.choices import WANDB_MODES

METRICS_FILE = "metrics.jsonl"
_DETAIL_PREFIXES = ("recall_", "precision_", "f1_")  # per-class values: in metrics.jsonl and W&B, not the console
_IN_PROGRESS_LINE = ("train/loss", "train/epoch", "train/samples_per_s")  # shown by the progress text already
WANDB_ID_FILE = "wandb_run_id"


def wandb_settings(wandb_cfg: Any, default_dir: str | os.PathLike) -> dict:
    """mode, project, entity, dir and run id of a run: W&B's environment variables over the config over defaults.

    A cluster job or `wandb agent` sets them for one run without editing its config (WANDB_MODE=offline on
    nodes without network, WANDB_DIR on a scratch disk), so they must win; W&B's legacy spellings
    (dryrun, run) and WANDB_DISABLED=true are understood too."""
    env = os.environ
    # a logger given no W&B config (the trainer's default one, unit tests) starts no W&B run, whatever WANDB_MODE says
    mode = "disabled" if wandb_cfg is None else (env.get("WANDB_MODE") or getattr(wandb_cfg, "mode", "disabled"))
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if env.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        mode = "disabled"
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb.mode (or WANDB_MODE) must be online, offline or disabled, got {mode!r}")
    return {
        "mode": mode,
        "project": env.get("WANDB_PROJECT") or getattr(wandb_cfg, "project", None) or "lakd",
        "entity": env.get("WANDB_ENTITY") or getattr(wandb_cfg, "entity", None),
        "dir": env.get("WANDB_DIR") or str(default_dir),
        "run_id": env.get("WANDB_RUN_ID") or None,
    }


def _to_float(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        try:
            return float(v.item())
        except (TypeError, ValueError, RuntimeError):
            return str(v)
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float, str)) or v is None:
        return v
    return str(v)


def _json_value(v: Any) -> Any:
    v = _to_float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.4g}"
    return str(v)


class RunLogger:
    """Log scalars to metrics.jsonl, W&B and the console (main process only)."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        cfg_dict: Mapping | None = None,
        wandb_cfg: Any = None,
        name: str | None = None,
        group: str | None = None,
        enabled_on_rank0: bool = True,
        console: bool = True,
        job_type: str | None = None,
        tags: list[str] | None = None,
        wandb_dir: str | os.PathLike | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = bool(enabled_on_rank0)
        self.console_enabled = console
        self._start = time.time()
        self._wandb_run = None
        self._file = None
        self._console = None
        self._progress = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        if console:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        settings = wandb_settings(wandb_cfg, wandb_dir or self.run_dir)
        if settings["mode"] != "disabled":
            self._wandb_run = self._init_wandb(wandb_cfg, settings, cfg_dict, name, group, job_type, tags or [])

    # ------------------------------------------------------------------------------------------ W&B
    def _init_wandb(
        self,
        wcfg: Any,
        settings: dict,
        cfg_dict: Mapping | None,
        name: str | None,
        group: str | None,
        job_type: str | None,
        tags: list[str],
    ):
        import wandb

        id_file = self.run_dir / WANDB_ID_FILE
        run_id = settings["run_id"] or (id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12])
        if not id_file.exists() or id_file.read_text().strip() != run_id:
            from lakd.io import atomic_write_bytes

            atomic_write_bytes(id_file, run_id.encode())
        Path(settings["dir"]).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=settings["project"],
            entity=settings["entity"],
            group=group or getattr(wcfg, "group", None),
            name=name,
            tags=list(dict.fromkeys([*(getattr(wcfg, "tags", []) or []), *tags])),
            job_type=job_type,
            config=dict(cfg_dict or {}),
            dir=settings["dir"],
            mode=settings["mode"],
            id=run_id,
            resume="allow",
            reinit="create_new",
        )
        run.define_metric("trainer/step")
        run.define_metric("*", step_metric="trainer/step")
        return run

    @property
    def wandb_run(self):
        return self._wandb_run

    # --------------------------------------------------------------------------------------- logging
    def _write(self, record: dict) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({k: _json_value(v) for k, v in record.items()}, ensure_ascii=False) + "\n")
        self._file.flush()

    def log(self, metrics: Mapping[str, Any], step: int, *, console: bool = True, prefix: str = "") -> None:
        """Log scalar values at optimizer step `step` (tensors are converted with .item())."""
        if not self.enabled:
            return
        values = {f"{prefix}{k}": _to_float(v) for k, v in metrics.items()}
        self._write({"step": int(step), "time": round(time.time(), 3), **values})
        if self._wandb_run is not None:
            self._wandb_run.log(
                {"trainer/step": int(step), **{k: v for k, v in values.items() if isinstance(v, (int, float))}}
            )
        if console and self._console is not None and self.console_enabled:
            shown = {k: v for k, v in values.items() if not k.split("/")[-1].startswith(_DETAIL_PREFIXES)}
            head = f"step {step}"
            if self._progress is not None and any(k.startswith("train/") for k in values):
                head = self._progress.update(step, values)
                if self._progress.live:  # the bar shows it
                    return
                shown = {k: v for k, v in shown.items() if k not in _IN_PROGRESS_LINE}
            body = "  ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
            self._console.print(f"[bold]{head}[/bold]  {body}", markup=True)

    def start_progress(self, total_steps: int, step: int = 0) -> None:
        """Show training progress from `step` to `total_steps` (the trainer calls this as its loop starts):
        a rich bar on a terminal, else step/total, epoch, loss, samples/s and ETA on each training line."""
        if self.enabled and self._console is not None and self.console_enabled and self._progress is None:
            from lakd.train.progress_display import ProgressDisplay

            self._progress = ProgressDisplay(total_steps, step, console=self._console)

    def _log_wandb(self, values: Mapping[str, Any], step: int) -> None:
        if self._wandb_run is not None and values:
            self._wandb_run.log({"trainer/step": int(step), **values})

    def log_images(self, images: Mapping[str, str | os.PathLike], step: int, caption: str | None = None) -> None:
        """PNG files (e.g. confusion matrices) as W&B images, one key each."""
        if self._wandb_run is None:
            return
        import wandb

        self._log_wandb({k: wandb.Image(str(path), caption=caption) for k, path in images.items()}, step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A W&B table (e.g. per-class recall / precision / F1 per language)."""
        if self._wandb_run is None:
            return
        import wandb

        self._log_wandb({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step)

    def log_confusion_matrix(
        self, key: str, y_true: list[int], y_pred: list[int], labels: list[str], step: int
    ) -> None:
        """W&B's interactive confusion-matrix chart from label indices."""
        if self._wandb_run is None or not y_true:
            return
        import wandb

        chart = wandb.plot.confusion_matrix(
            y_true=list(y_true), preds=list(y_pred), class_names=list(labels), title=key
        )
        self._log_wandb({key: chart}, step)

    def log_artifact(self, path: str | os.PathLike, name: str, kind: str = "model", metadata: Mapping | None = None):
        """A directory (e.g. the best checkpoint) as a W&B artifact, aliased "best" and "latest"."""
        if self._wandb_run is None:
            return
        import wandb

        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)
        artifact = wandb.Artifact(safe, type=kind, metadata={k: _to_float(v) for k, v in (metadata or {}).items()})
        artifact.add_dir(str(path))
        self._wandb_run.log_artifact(artifact, aliases=["best", "latest"])

    def event(self, name: str, step: int | None = None, **fields: Any) -> None:
        """A one-off happening (resume, preemption, best checkpoint, early stop) in metrics.jsonl and console."""
        if not self.enabled:
            return
        record = {"event": name, "time": round(time.time(), 3), **fields}
        if step is not None:
            record["step"] = int(step)
        self._write(record)
        if self._console is not None and self.console_enabled:
            extra = "  ".join(f"{k}={_fmt(_to_float(v))}" for k, v in fields.items())
            self._console.print(
                f"[cyan]{name}[/cyan]"
                + (f" at step {step}" if step is not None else "")
                + (f"  {extra}" if extra else ""),
                markup=True,
            )

    def info(self, message: str) -> None:
        if self.enabled and self._console is not None and self.console_enabled:
            self._console.print(message, markup=False)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final numbers: W&B run summary and a ``summary`` event line."""
        if not self.enabled:
            return
        clean = {k: _to_float(v) for k, v in values.items()}
        if self._wandb_run is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float, str)):
                    self._wandb_run.summary[k] = v
        self._write({"event": "summary", "time": round(time.time(), 3), **clean})

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """All records of a run's metrics.jsonl (a torn last line from a crash is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
