"""Recipe: the paper's comparison — FT-Mono, FT-Multi, KD-Multi, MTKD-Multi, LA-MTKD — trained on the same
shards, selected on dev, reported on test as UA / WA per language with bootstrap 95% confidence intervals.

    lakd experiment paper-table --config emosynth3

Mono / Multi names the student's training data (one language / all), as in the published code.

| run        | teachers            | weighting, balance                          | student                            |
|------------|---------------------|---------------------------------------------|------------------------------------|
| FT-Mono    | —  (one model per language, each evaluated on its language)                                         |
| FT-Multi   | —  (one model on all languages)                                                                      |
| KD-Multi   | the FT-Multi model  | published KD: λ=0.75, T=5, KL mean          | plain (no language embedding)      |
| MTKD-Multi | the FT-Mono models  | published MTKD: cosine-batch, λ=0.25, T=5   | plain (as published)               |
| LA-MTKD    | the FT-Mono models  | route, the config's λ/T (lakd's method)     | language embedding + hier. att. |
"""

from __future__ import annotations

import logging
import time

import numpy as np

from lakd.config import Config
from lakd.recipes import cache as cache_recipe
from lakd.recipes import common, distill, finetune, prepare
from lakd.recipes.evaluate import predict_shards

log = logging.getLogger("lakd.recipes.paper_table")

RUNS = ("ft-mono", "ft-multi", "kd-multi", "mtkd-multi", "la-mtkd")
DISPLAY = {
    "ft-mono": "FT-Mono",
    "ft-multi": "FT-Multi",
    "kd-multi": "KD-Multi",
    "mtkd-multi": "MTKD-Multi",
    "la-mtkd": "LA-MTKD",
}
# The published code's loss balance (aalto-speech/mtkd4ser utils.train_kd / train_mtkd): KLDivLoss(reduction="mean")
# at T = 5 with T² scaling; λ = 0.75 with one teacher, 0.25 with the per-language teachers weighted per batch.
PUBLISHED_KD = {"distill.kl_reduction": "mean", "distill.temperature": 5.0, "distill.kd_weight": 0.75}
PUBLISHED_MTKD = {
    "distill.weighting": "cosine-batch",
    "distill.cosine_tau": 0.25,
    "distill.kl_reduction": "mean",
    "distill.temperature": 5.0,
    "distill.kd_weight": 0.25,
}
PLAIN_STUDENT = {"student.language_embedding": False, "student.hierarchical_attention": False}


def student_variant(cfg: Config, run: str) -> Config:
    """The config of one distillation run: the published presets on the plain student, the configured LA-MTKD."""
    if run == "la-mtkd":
        return cfg.copy(**{"distill.weighting": "route"})
    if run == "kd-multi":
        return cfg.copy(**PLAIN_STUDENT, **PUBLISHED_KD)
    if run == "mtkd-multi":
        return cfg.copy(**PLAIN_STUDENT, **PUBLISHED_MTKD)
    raise ValueError(run)


def predict_checkpoint(cfg: Config, ckpt: str, languages: list[str] | None):
    """Test-split predictions of one checkpoint (only `languages` if given)."""
    from lakd.models.ser import SERModel
    from lakd.train.runtime import setup_runtime

    device = setup_runtime(cfg).device
    model = SERModel.from_pretrained(ckpt).to(device)
    return predict_shards(
        model, common.data_spec(cfg, "test"), cfg.labels, cfg.languages, cfg.data, device, language_filter=languages
    )


def merge_predictions(preds: list[dict]) -> dict:
    out = {k: sum((list(p[k]) for p in preds), []) for k in ("keys", "y_true", "y_pred", "languages", "speakers")}
    out["probs"] = np.concatenate([p["probs"] for p in preds])
    return out


def run(cfg: Config, runs: list[str] | None = None, n_bootstrap: int = 1000) -> dict:
    from lakd.eval.report import build_report, write_report

    runs = list(RUNS) if runs is None else runs
    unknown = set(runs) - set(RUNS)
    if unknown:
        raise ValueError(f"unknown run(s) {sorted(unknown)}; choose from {RUNS}")
    common.write_run_config(cfg)
    prepare.run(cfg)
    langs = list(cfg.languages)
    timings: dict[str, float] = {}
    preds: dict[str, dict] = {}
    ckpts: dict[str, str] = {}

    need_mono = any(r in runs for r in ("ft-mono", "mtkd-multi", "la-mtkd"))
    need_multi = any(r in runs for r in ("ft-multi", "kd-multi"))
    t0 = time.time()
    mono = {l: finetune.run_teacher(cfg, l) for l in langs} if need_mono else {}
    timings["ft-mono"] = time.time() - t0
    t0 = time.time()
    multi = {common.MULTI: finetune.run_teacher(cfg, common.MULTI)} if need_multi else {}
    timings["ft-multi"] = time.time() - t0
    if cfg.distill.use_cache:
        t0 = time.time()
        cache_dir = cache_recipe.run(cfg, {**mono, **multi})
        timings["cache"] = time.time() - t0
    else:
        cache_dir = None

    if "ft-mono" in runs:
        preds["ft-mono"] = merge_predictions([predict_checkpoint(cfg, mono[l], [l]) for l in langs])
        ckpts["ft-mono"] = {l: mono[l] for l in langs}
    if "ft-multi" in runs:
        preds["ft-multi"] = predict_checkpoint(cfg, multi[common.MULTI], None)
        ckpts["ft-multi"] = multi[common.MULTI]
    for r in ("kd-multi", "mtkd-multi", "la-mtkd"):
        if r not in runs:
            continue
        t0 = time.time()
        rcfg = student_variant(cfg, r)
        teachers = multi if r == "kd-multi" else mono
        ckpts[r] = distill.run(rcfg, teachers, cache_dir, name=f"students/{r}")
        timings[r] = time.time() - t0
        preds[r] = predict_checkpoint(rcfg, ckpts[r], None)

    reports = {}
    for r in runs:
        rep = build_report(preds[r], list(cfg.labels), n_bootstrap=n_bootstrap, seed=cfg.seed, title=DISPLAY[r])
        write_report(rep, common.run_path(cfg, "eval", r, "test"))
        reports[r] = rep
    table = format_paper_table(reports, langs)
    result = {
        "config": cfg.name,
        "seed": cfg.seed,
        "runs": runs,
        "languages": langs,
        "timings_s": timings,
        "checkpoints": ckpts,
        "results": {r: summarize(reports[r], langs) for r in runs},
        "markdown": table,
    }
    out = common.run_path(cfg, "paper_table")
    from lakd.io import atomic_write_bytes, atomic_write_json

    atomic_write_json(out.with_suffix(".json"), {k: v for k, v in result.items() if k != "markdown"})
    atomic_write_bytes(out.with_suffix(".md"), (table + "\n").encode())
    result["json_path"], result["markdown_path"] = str(out.with_suffix(".json")), str(out.with_suffix(".md"))
    return result


def summarize(report: dict, langs: list[str]) -> dict:
    """{group: {ua, ua_ci, wa, wa_ci, n}} for each language and overall."""
    out = {}
    for g in [*langs, "overall"]:
        m = _group(report, g)
        if m is None:
            continue
        out[g] = {k: m[k] for k in ("ua", "ua_ci", "wa", "wa_ci", "n") if k in m}
    return out


def _group(report: dict, g: str) -> dict | None:
    metrics = report["metrics"]
    return metrics["overall"] if g == "overall" else metrics["groups"].get(g)


def _cell(m: dict | None, key: str) -> str:
    if m is None:
        return "—"
    ci = m.get(f"{key}_ci")
    s = f"{100 * m[key]:.1f}"
    return s + (f" [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]" if ci else "")


def format_paper_table(reports: dict[str, dict], langs: list[str]) -> str:
    """Markdown table shaped like the paper's Table 6: UA / WA (%) per language and overall, 95% CIs."""
    groups = [*langs, "overall"]
    head = "| run | " + " | ".join(f"{g} UA | {g} WA" for g in groups) + " |"
    sep = "|---|" + "---|---|" * len(groups)
    lines = ["UA / WA in % on the test split, [95% bootstrap CI]", "", head, sep]
    for r, rep in reports.items():
        cells = []
        for g in groups:
            m = _group(rep, g)
            cells += [_cell(m, "ua"), _cell(m, "wa")]
        lines.append(f"| {DISPLAY.get(r, r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
