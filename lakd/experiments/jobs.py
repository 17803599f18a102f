"""The jobs of an experiment's units: thin calls of the recipes with the inputs the plan names.

Each runs inside a job of the graph as `job(cfg, inputs, **params)` (lakd.launch.unit_graph): `cfg` is the
unit's own config (seed, variant, its `work/<stage>/<item>-<key>/` run directory) and `inputs` the outputs of
the upstream units it reads ({"teachers": {item: checkpoint}, "cache": {item: dir}, ...}).

W&B: every job's offline run lands in `<experiment>/wandb/` (unless WANDB_DIR says otherwise), in the group
named after the experiment, so `wandb sync <experiment>/wandb/offline-run-*` uploads the whole experiment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from lakd.config import Config
from lakd.experiments.plan import experiment_dir_of


@contextlib.contextmanager
def experiment_wandb_dir(cfg: Config) -> Iterator[None]:
    """WANDB_DIR = <experiment> while the job runs (W&B writes <experiment>/wandb/), unless the user set it;
    restored afterwards, since debug jobs share the driver's process."""
    if os.environ.get("WANDB_DIR"):
        yield
        return
    experiment_dir = experiment_dir_of(cfg)
    experiment_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_DIR"] = str(experiment_dir)
    try:
        yield
    finally:
        os.environ.pop("WANDB_DIR", None)


def train_teacher(cfg: Config, inputs: dict, *, language: str) -> str:
    """One FT-Mono teacher (a language) or the FT-Multi model ("multi"); returns its best checkpoint."""
    from lakd.recipes.finetune import run_teacher

    with experiment_wandb_dir(cfg):
        return run_teacher(cfg, language)


def make_cache(cfg: Config, inputs: dict, *, teachers: dict[str, str]) -> str:
    """The knowledge of `teachers` ({name: teachers item}) over the training shards; returns the cache dir."""
    from lakd.recipes import cache

    return cache.run(cfg, {name: inputs["teachers"][item] for name, item in teachers.items()})


def train_student(
    cfg: Config,
    inputs: dict,
    *,
    teachers: dict[str, str],
    cache: str | None,
    languages: list[str] | None,
) -> str:
    """A student distilled from `teachers` on `languages` (None: all); returns its best checkpoint."""
    from lakd.recipes import distill

    teacher_dirs = {name: inputs["teachers"][item] for name, item in teachers.items()}
    cache_dir = inputs["cache"][cache] if cache else None
    with experiment_wandb_dir(cfg):
        return distill.run(cfg, teacher_dirs, cache_dir, languages=languages)


def predict_checkpoint(cfg: Config, checkpoint: str, languages: list[str] | None) -> dict:
    """Test-split predictions of one checkpoint (only `languages` if given)."""
    from lakd.models.ser import SERModel
    from lakd.recipes.common import data_spec
    from lakd.recipes.evaluate import predict_shards
    from lakd.train.runtime import setup_runtime

    device = setup_runtime(cfg).device
    model = SERModel.from_pretrained(checkpoint).to(device)
    spec = data_spec(cfg, "test")
    return predict_shards(model, spec, cfg.labels, cfg.languages, cfg.data, device, language_filter=languages)


def merge_predictions(preds: list[dict]) -> dict:
    """Predictions of several models on disjoint utterances (a Mono run: one model per language) as one."""
    import numpy as np

    out = {k: sum((list(p[k]) for p in preds), []) for k in ("keys", "y_true", "y_pred", "languages", "speakers")}
    out["probs"] = np.concatenate([p["probs"] for p in preds])
    return out


def evaluate_run(
    cfg: Config,
    inputs: dict,
    *,
    models: list[dict],
    n_bootstrap: int,
) -> dict:
    """The test report of one run: each model ({stage, item, languages}) on its languages, merged; written to
    `<run_dir>/test/` (metrics.json, report.md, predictions.csv, confusion PNGs) and logged to W&B."""
    from lakd.eval.report import build_report
    from lakd.eval.report import write_report as write_eval_report
    from lakd.eval.tracking import log_report_run
    from lakd.recipes.evaluate import compact

    preds = [predict_checkpoint(cfg, inputs[m["stage"]][m["item"]], m["languages"]) for m in models]
    pred = merge_predictions(preds)
    report = build_report(pred, list(cfg.labels), n_bootstrap=n_bootstrap, seed=cfg.seed, title=cfg.name)
    skipped = [p["skipped"] for p in preds if (p.get("skipped") or {}).get("total")]
    if skipped:
        report["skipped"] = skipped  # utterances a model could not score are left out (see the report)
    out = Path(cfg.run_dir) / "test"
    write_eval_report(report, out)
    report["out_dir"] = str(out)
    with experiment_wandb_dir(cfg):
        log_report_run(cfg, report, out, f"{cfg.name}-test")  # tags: the unit's wandb.tags (grid, variant, seed)
    return compact(report)


def write_report(cfg: Config, inputs: dict, *, baseline: str, grid: str) -> dict:
    """The grid's report (grids/<grid>/: report.md, report.json, figures, the W&B summary run); `baseline` is
    in the plan (experiment.json) too, and here so that a changed baseline reruns the report."""
    from lakd.experiments.report import build_experiment_report

    with experiment_wandb_dir(cfg):
        return build_experiment_report(experiment_dir_of(cfg), grid, wandb_cfg=cfg.wandb)
