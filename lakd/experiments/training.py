"""How each run of a grid trained, for the report: did its dev UA stop rising before the schedule ended?

A schedule too short for the corpus shows as models whose best dev evaluation is their last one: they were still
improving when training stopped. Read from each model's metrics.jsonl (lakd.train.logging: the dev evaluations
and the `summary` event the trainer writes last); the models of a run are its students, or for a fine-tuning
variant its teachers (FT-Mono: one per language).
"""

from __future__ import annotations

from pathlib import Path

from lakd.launch.units import read_done, unit_dir
from lakd.train.logging import read_metrics


def model_training(model_dir: str | Path) -> dict | None:
    """{steps, best_step, best_dev_ua, last_dev_ua, best_at_last_eval, train_seconds} of one finished model (its
    best/ checkpoint directory), or None when its metrics.jsonl has no summary."""
    records = read_metrics(Path(model_dir).parent)
    summary = next((r for r in reversed(records) if r.get("event") == "summary"), None)
    dev = [r for r in records if "dev/ua" in r]
    if summary is None or not dev:
        return None
    return {
        "steps": summary.get("steps"),
        "best_step": summary.get("best_step"),
        "best_dev_ua": summary.get("best_metric"),
        "last_dev_ua": dev[-1]["dev/ua"],
        "best_at_last_eval": summary.get("best_step") == dev[-1].get("step"),
        "train_seconds": summary.get("train_seconds"),
    }


def run_training(run_dir: Path, units: list) -> list[dict]:
    """The training facts of the models of one run, from its units ([[stage, item], ...] of experiment.json)."""
    models = [u for u in units if u[0] == "student"] or [u for u in units if u[0] == "teachers"]
    out = []
    for stage, item in models:
        done = read_done(unit_dir(run_dir, stage, item))
        facts = model_training(done["output"]) if done and isinstance(done.get("output"), str) else None
        if facts is not None:
            out.append(facts)
    return out


def summarize(by_seed: dict[str, list[dict]]) -> dict | None:
    """One variant over its seeds: mean steps and best step, how many models peaked at their last evaluation."""
    models = [m for ms in by_seed.values() for m in ms]
    if not models:
        return None

    def mean(key: str) -> float | None:
        values = [m[key] for m in models if m.get(key) is not None]
        return sum(values) / len(values) if values else None

    return {
        "models": len(models),
        "steps": mean("steps"),
        "best_step": mean("best_step"),
        "best_at_last_eval": sum(bool(m["best_at_last_eval"]) for m in models),
        "train_seconds": mean("train_seconds"),
    }
