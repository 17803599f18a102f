"""What a search leaves behind, in its directory (`<run_dir>/tune/<name>/`):

- `trials.csv`, `trials.md`: one row per trial — its values, best dev UA/WA (overall and per language) as its
  `best/` checkpoint holds them, evaluations run, whether it finished or the scheduler stopped it, time;
- `plots/<parameter>.png`: each searched parameter against best dev UA;
- `best.yaml`: the complete config of the best trial (selected on dev only) that `lakd launch --config best.yaml`
  and `sbatch slurm/distill.sh --config best.yaml` accept as they are; its run directory `best-run/` starts with
  links to the search's teachers and cache, so a launch trains only the student (delete the links to retrain all);
- `test/`: the one evaluation of the best trial's checkpoint on the test split (report JSON/markdown/PNG);
- `summary.json`: all of it, plus each driver session (a resumed search appends; nothing earlier is lost).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from lakd.config import Config, config_from_dict, save_config
from lakd.io import atomic_write_json

BEST_RUN = "best-run"


def trial_rows(results, space_paths: list[str], languages: list[str], student: str = "student") -> list[dict]:
    """One row per trial of a Ray ResultGrid, best first; dev values are read from each trial's best/ checkpoint
    (what a launch of that trial's config would select), so they match the model kept."""
    rows = []
    for r in results:
        trial_dir = Path(r.path)
        best_dir = trial_dir / student / "best"
        meta = _read_json(best_dir / "lakd.json") or {}
        dev = (meta.get("meta") or {}).get("dev") or {}
        history = r.metrics_dataframe
        evals = int(history["evals"].max()) if history is not None and "evals" in history else 0
        finished = (trial_dir / student / "done.json").exists()
        row: dict[str, Any] = {
            "trial": trial_dir.name,
            "status": "error" if r.error else ("finished" if finished else "stopped"),
            "evals": evals,
            "best_dev_ua": dev.get("ua"),
            "best_dev_wa": dev.get("wa"),
        }
        for lang in languages:
            row[f"dev_ua_{lang}"] = dev.get(f"ua_{lang}")
        for p in space_paths:
            row[p] = r.config.get(p)
        row["time_s"] = round(float(r.metrics.get("time_total_s", 0.0)), 1) if r.metrics else None
        row["checkpoint"] = str(best_dir) if (best_dir / "lakd.json").exists() else None
        row["error"] = str(r.error).splitlines()[0][:200] if r.error else None
        rows.append(row)
    rows.sort(key=lambda x: -1.0 if x["best_dev_ua"] is None else -float(x["best_dev_ua"]))
    return rows


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_tables(rows: list[dict], out: Path) -> tuple[Path, Path]:
    columns = list(rows[0]) if rows else ["trial"]
    csv_path, md_path = out / "trials.csv", out / "trials.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in columns if c not in ("checkpoint", "error")]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]) for c in shown) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_plots(rows: list[dict], space_paths: list[str], out: Path) -> list[Path]:
    """One PNG per parameter: its value against best dev UA (categorical values on evenly spaced ticks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    scored = [r for r in rows if r["best_dev_ua"] is not None]
    written = []
    for p in space_paths:
        values = [r[p] for r in scored]
        ua = [100 * float(r["best_dev_ua"]) for r in scored]
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            ax.scatter(values, ua)
            if values and min(values) > 0 and max(values) / min(values) > 20:
                ax.set_xscale("log")
        else:
            cats = sorted({str(v) for v in values})
            ax.scatter([cats.index(str(v)) for v in values], ua)
            ax.set_xticks(range(len(cats)), cats)
        ax.set_xlabel(p)
        ax.set_ylabel("best dev UA (%)")
        ax.set_title(f"{p} vs dev UA ({len(scored)} trials)", fontsize=9)
        fig.tight_layout()
        path = plots / f"{p}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write_best_config(base: Config, params: dict, out: Path, note: dict) -> Path:
    """best.yaml: the search's config with the best trial's values, its own run directory (`best-run/`, whose
    teachers/ and cache/ link to the search's so that a launch reuses them) and a header saying where it came from."""
    cfg = config_from_dict(json.loads(json.dumps(base.to_dict())), where="search config").copy(**params)
    run_dir = out / BEST_RUN
    cfg.run_dir = str(run_dir)
    cfg.name = f"{base.name}-best"
    run_dir.mkdir(parents=True, exist_ok=True)
    for shared in ("teachers", "cache"):
        src, link = Path(base.run_dir) / shared, run_dir / shared
        if src.exists() and not link.exists() and not link.is_symlink():
            os.symlink(src, link, target_is_directory=True)
    path = out / "best.yaml"
    save_config(cfg, path)
    header = "".join(f"# {k}: {v}\n" for k, v in note.items())
    path.write_text(f"# best trial of a lakd tune search (selected on dev UA)\n{header}" + path.read_text())
    return path


def evaluate_best_on_test(cfg: Config, checkpoint: str, out: Path) -> dict:
    """The single test-split evaluation of the search: the best trial's checkpoint, once (kept while it stays best)."""
    from lakd.recipes import common
    from lakd.recipes.evaluate import evaluate_checkpoint
    from lakd.recipes.paper_table import summarize

    done = _read_json(out / "test" / "tested.json")
    if done and done.get("checkpoint") == checkpoint:
        return done
    report = evaluate_checkpoint(checkpoint, common.data_spec(cfg, "test"), out_dir=out / "test", device=cfg.device)
    result = {"checkpoint": checkpoint, "results": summarize(report, list(cfg.languages))}
    atomic_write_json(out / "test" / "tested.json", json.loads(json.dumps(result, default=str)))
    return result


def asha_savings(rows: list[dict], max_evals: int) -> dict:
    """Dev evaluations run against what every trial run to the end would have cost."""
    ran = sum(int(r["evals"] or 0) for r in rows)
    full = max_evals * len(rows)
    return {"evaluations_run": ran, "evaluations_if_all_finished": full, "saved": 1 - ran / full if full else 0.0}


def write_summary(out: Path, fields: dict) -> Path:
    """summary.json: this session's results; earlier sessions (a resumed search) are kept in `sessions`."""
    path = out / "summary.json"
    previous = _read_json(path) or {}
    sessions = list(previous.get("sessions", []))
    sessions.append({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "trials": len(fields.get("trials", []))})
    atomic_write_json(path, json.loads(json.dumps({**fields, "sessions": sessions}, default=_jsonable)))
    return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)
