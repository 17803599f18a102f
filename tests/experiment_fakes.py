"""Stand-in jobs for experiment grids: the real graph, plan, report and statistics, with jobs that record their
calls and, instead of training, write evaluations of made-up predictions (lakd's own report writer), so a
grid runs in seconds. Each variant has a fixed accuracy; seeds change which utterances it gets wrong."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from lakd.config import Config
from lakd.experiments.plan import Statistics, experiment_dir_of

LANGS = ["en", "fi"]
LABELS = ["anger", "happiness", "neutral", "sadness"]
N_PER_LANGUAGE = 48
SPEAKERS_PER_LANGUAGE = 6
ACCURACY = {"ft-multi": 0.55, "la-mtkd": 0.75, "mtkd-multi": 0.57, "ft-mono": 0.6}
FAST = Statistics(n_bootstrap=200, n_permutations=400)


def small_cfg(**changes) -> Config:
    """A config the stand-in jobs accept: two languages, data paths that are never read."""
    cfg = Config(name="t", languages=list(LANGS), labels=list(LABELS))
    cfg.data.train = cfg.data.dev = cfg.data.test = "/nonexistent"
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


def note(experiment_dir: str, line: str) -> None:
    with open(Path(experiment_dir) / "calls.log", "a") as f:
        f.write(line + "\n")


def calls(experiment_dir: Path) -> list[str]:
    p = Path(experiment_dir) / "calls.log"
    return p.read_text().splitlines() if p.exists() else []


def fake_teacher(cfg, inputs, *, language):
    experiment_dir = experiment_dir_of(cfg)
    note(experiment_dir, f"teacher {language} seed {cfg.seed}")
    out = Path(cfg.run_dir) / "teachers" / language / "best"
    out.mkdir(parents=True, exist_ok=True)
    return str(out)


def fake_cache(cfg, inputs, *, teachers):
    experiment_dir = experiment_dir_of(cfg)
    note(experiment_dir, f"cache seed {cfg.seed} " + ",".join(sorted(teachers)))
    assert set(inputs["teachers"]) == set(teachers.values())  # it reads exactly its teachers
    return str(Path(cfg.run_dir) / "cache")


def fake_student(cfg, inputs, *, teachers, cache, languages):
    experiment_dir = experiment_dir_of(cfg)
    dirs = sorted(Path(inputs["teachers"][i]).parent.name for i in teachers.values())
    note(experiment_dir, f"student {cfg.name.split('-', 1)[-1]} kd={cfg.distill.kd_weight} teachers={','.join(dirs)}")
    assert cache is None or inputs["cache"][cache]
    return str(Path(cfg.run_dir) / "student" / "best")


def test_set() -> tuple[list[str], list[int], list[str], list[str]]:
    keys, y, langs, speakers = [], [], [], []
    for lang in LANGS:
        for i in range(N_PER_LANGUAGE):
            keys.append(f"{lang}-{i:03d}")
            y.append(i % len(LABELS))
            langs.append(lang)
            speakers.append(f"{lang}-spk{i % SPEAKERS_PER_LANGUAGE}")
    return keys, y, langs, speakers


def fake_evaluate(cfg, inputs, *, models, n_bootstrap):
    from lakd.eval.report import build_report, write_report
    from lakd.recipes.evaluate import compact

    experiment_dir = experiment_dir_of(cfg)
    variant = cfg.wandb.tags[1]  # [grid, variant, seed<n>]
    note(experiment_dir, f"evaluate {variant} seed {cfg.seed}")
    keys, y, langs, speakers = test_set()
    rng = np.random.default_rng(zlib.crc32(f"{variant}/{cfg.seed}".encode()))
    right = rng.random(len(y)) < ACCURACY.get(variant, 0.5)
    pred = [t if ok else (t + 1 + rng.integers(0, 3)) % 4 for t, ok in zip(y, right)]
    predictions = {"keys": keys, "y_true": y, "y_pred": pred, "languages": langs, "speakers": speakers}
    report = build_report(predictions, LABELS, n_bootstrap=n_bootstrap, seed=cfg.seed, title=cfg.name)
    out = Path(cfg.run_dir) / "test"
    write_report(report, out, figures=False)
    report["out_dir"] = str(out)
    return compact(report)


def fake_report(cfg, inputs, *, baseline, grid):
    from lakd.experiments.report import build_experiment_report

    experiment_dir = experiment_dir_of(cfg)
    note(experiment_dir, "report")
    return build_experiment_report(experiment_dir, grid)


RECIPES = {
    "teachers": fake_teacher,
    "cache": fake_cache,
    "student": fake_student,
    "evaluate": fake_evaluate,
    "report": fake_report,
}


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())
