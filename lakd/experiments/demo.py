"""`lakd demo`: the whole pipeline — shards -> teachers -> teacher knowledge -> student -> evaluation — through
the job graph (local executor by default), then a results table: each FT-Mono teacher on its language next to
the language-aware student.

    lakd demo                   # the embedded default (tiny config, synthetic corpus, CPU)

Every model is trained by a job of the graph (lakd.launch); this only predicts the test split with the
finished checkpoints and prints the table. For several variants and seeds, use an experiment grid.
"""

from __future__ import annotations

from lakd.config import Config
from lakd.experiments.jobs import merge_predictions, predict_checkpoint
from lakd.recipes import common
from lakd.recipes.paper_table import summarize

DISPLAY = {"ft-mono": "FT-Mono", "la-mtkd": "LA-MTKD"}


def _cell(m: dict | None, key: str) -> str:
    if m is None:
        return "—"
    ci = m.get(f"{key}_ci")
    s = f"{100 * m[key]:.1f}"
    return s + (f" [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]" if ci else "")


def results_table(reports: dict[str, dict], langs: list[str]) -> str:
    """Markdown table shaped like the paper's Table 6: UA / WA (%) per language and overall, 95% CIs."""
    groups = [*langs, "overall"]
    head = "| run | " + " | ".join(f"{g} UA | {g} WA" for g in groups) + " |"
    sep = "|---|" + "---|---|" * len(groups)
    lines = ["UA / WA in % on the test split, [95% bootstrap CI]", "", head, sep]
    for r, rep in reports.items():
        metrics = rep["metrics"]
        cells = []
        for g in groups:
            m = metrics["overall"] if g == "overall" else metrics["groups"].get(g)
            cells += [_cell(m, "ua"), _cell(m, "wa")]
        lines.append(f"| {DISPLAY.get(r, r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(cfg: Config) -> dict:
    """Evaluate the run's teachers (each on its language) and student on the test split."""
    from lakd.eval.report import build_report, write_report
    from lakd.io import atomic_write_bytes

    langs = list(cfg.languages)
    mono = merge_predictions([predict_checkpoint(cfg, str(common.teacher_dir(cfg, l) / "best"), [l]) for l in langs])
    student = predict_checkpoint(cfg, str(common.run_path(cfg, "student", "best")), None)
    reports = {}
    for name, pred in (("ft-mono", mono), ("la-mtkd", student)):
        reports[name] = build_report(pred, list(cfg.labels), n_bootstrap=1000, seed=cfg.seed, title=DISPLAY[name])
        write_report(reports[name], common.run_path(cfg, "eval", name, "test"))
    table = results_table(reports, langs)
    path = common.run_path(cfg, "results.md")
    atomic_write_bytes(path, (table + "\n").encode())
    return {
        "markdown": table,
        "markdown_path": str(path),
        "results": {DISPLAY[k]: summarize(v, langs) for k, v in reports.items()},
    }


def run_demo(cfg: Config, executor: str | None = None) -> dict:
    from lakd.launch import launch

    common.write_run_config(cfg)
    launch(cfg, cfg.run_dir, executor=executor or cfg.launch.executor, wait=True)
    return report(cfg)
