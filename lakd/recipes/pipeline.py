"""Recipe: the whole pipeline — shards -> teachers -> teacher knowledge -> student -> evaluation — through the
job graph (local executor by default), then a results table: each FT-Mono teacher on its language next to
the language-aware student.

    lakd demo                   # the embedded default (tiny config, synthetic corpus, CPU)
"""

from __future__ import annotations

import logging

from lakd.config import Config
from lakd.recipes import common
from lakd.recipes.paper_table import format_paper_table, merge_predictions, predict_checkpoint, summarize

log = logging.getLogger("lakd.recipes.pipeline")


def report(cfg: Config) -> dict:
    """Evaluate the run's teachers (each on its language) and student on the test split."""
    from lakd.eval.report import build_report, write_report

    langs = list(cfg.languages)
    mono = merge_predictions([predict_checkpoint(cfg, str(common.teacher_dir(cfg, l) / "best"), [l]) for l in langs])
    student = predict_checkpoint(cfg, str(common.run_path(cfg, "student", "best")), None)
    reports = {}
    for name, pred in (("ft-mono", mono), ("la-mtkd", student)):
        reports[name] = build_report(pred, list(cfg.labels), n_bootstrap=1000, seed=cfg.seed, title=name)
        write_report(reports[name], common.run_path(cfg, "eval", name, "test"))
    table = format_paper_table(reports, langs)
    from lakd.io import atomic_write_bytes

    path = common.run_path(cfg, "results.md")
    atomic_write_bytes(path, (table + "\n").encode())
    return {
        "markdown": table,
        "markdown_path": str(path),
        "results": {k: summarize(v, langs) for k, v in reports.items()},
    }


def run(cfg: Config, executor: str | None = None) -> dict:
    from lakd.launch import launch

    common.write_run_config(cfg)
    launch(cfg, cfg.run_dir, executor=executor or cfg.launch.executor, wait=True)
    return report(cfg)
