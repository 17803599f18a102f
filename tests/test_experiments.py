"""Experiment grids: built-in and YAML grids, the plan (shared teachers, keys), a grid through the job graph with
stand-in jobs (reruns of changed variants, the report's statistics against lakd.eval.paired), the grid in
`lakd status`; and end to end with real tiny models: the local executor (slow) and SLURM job arrays (slurm)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from experiment_fakes import FAST, LABELS, LANGS, RECIPES, calls, read, small_cfg
from typer.testing import CliRunner

from lakd.cli import app
from lakd.config import ConfigError
from lakd.eval.paired import paired_comparison
from lakd.experiments import load_grid, read_report, run_experiment
from lakd.experiments.grids import GRIDS_DIR, grid_from_dict
from lakd.experiments.plan import plan_experiment
from lakd.experiments.stats import holm, mean_sd, read_predictions
from lakd.experiments.status import grid_status
from lakd.launch import UnitStage, stage_status
from lakd.recipes.paper_table import PUBLISHED_KD, PUBLISHED_MTKD

# ------------------------------------------------------------------------------------------------ grids


def test_paper_grid_is_the_published_comparison_plus_la_mtkd():
    g = load_grid("paper")
    assert [v.label for v in g.variants] == [
        "FT-Mono", "FT-Multi", "KD-Mono", "KD-Multi", "MTKD-Mono", "MTKD-Multi", "LA-MTKD",
    ]  # fmt: skip
    assert g.baseline == "ft-multi"
    kd, mtkd, la = g.variant("kd-mono"), g.variant("mtkd-multi"), g.variant("la-mtkd")
    assert (kd.train, kd.teachers) == ("mono", "multi") and g.variant("kd-multi").train == "multi"
    assert all(kd.overrides[k] == v for k, v in PUBLISHED_KD.items())
    assert all(mtkd.overrides[k] == v for k, v in PUBLISHED_MTKD.items()) and mtkd.teachers == "mono"
    assert not kd.overrides["student.language_embedding"] and not mtkd.overrides["student.hierarchical_attention"]
    assert la.overrides["distill.weighting"] == "route" and la.overrides["student.language_embedding"]


def test_ablation_grid_removes_one_part_each():
    g = load_grid("ablation")
    assert g.baseline == "la-mtkd"
    full = g.variant("la-mtkd").overrides
    changed = {v.name: {k: x for k, x in v.overrides.items() if full.get(k) != x} for v in g.variants}
    assert changed == {
        "la-mtkd": {},
        "no-lang-emb": {"student.language_embedding": False},
        "no-hier-att": {"student.hierarchical_attention": False},
        "cosine-batch": {"distill.weighting": "cosine-batch"},
        "no-kd": {"distill.kd_weight": 0.0},
        "embed-loss": {"distill.embed_weight": 0.1},
    }


def test_yaml_grid_from_builtin_variants_and_errors(tmp_path):
    path = tmp_path / "temps.yaml"
    path.write_text(
        "baseline: la-mtkd\nvariants:\n  - from: la-mtkd\n"
        "  - {name: la-t2, from: la-mtkd, set: {distill.temperature: 2.0}}\n"
        "  - {name: ft-long, method: finetune, train: multi, set: {teacher_optim.epochs: 15}}\n"
    )
    g = load_grid(path)
    assert g.name == "temps" and [v.name for v in g.variants] == ["la-mtkd", "la-t2", "ft-long"]
    assert g.variant("la-t2").overrides["distill.temperature"] == 2.0
    assert g.variant("la-t2").overrides["distill.weighting"] == "route"  # inherited
    assert load_grid("example").name == "example"  # lakd/configs/grids/example.yaml, by name
    with pytest.raises(ConfigError, match="needs teachers"):
        grid_from_dict({"variants": [{"name": "x", "method": "distill"}]})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sett'\]"):
        grid_from_dict({"variants": [{"from": "la-mtkd", "sett": {}}]})
    with pytest.raises(ConfigError, match="baseline 'nope'"):
        grid_from_dict({"baseline": "nope", "variants": [{"from": "la-mtkd"}]})
    with pytest.raises(ConfigError, match="repeated"):
        grid_from_dict({"variants": [{"from": "la-mtkd"}, {"from": "la-mtkd"}]})
    with pytest.raises(ConfigError, match="variant bad: .*distill.lambda"):
        plan_experiment(small_cfg(), grid_from_dict({"variants": [{"name": "bad", "from": "la-mtkd",
                        "set": {"distill.lambda": 1}}]}), [0], tmp_path)  # fmt: skip


# ------------------------------------------------------------------------------------------------- plan


def test_plan_shares_teachers_and_caches_across_variants(tmp_path):
    plan = plan_experiment(small_cfg(), load_grid("paper"), [0, 1, 2], tmp_path / "exp")
    stages = {s.name: s for s in plan.stages}
    assert list(stages) == ["teachers", "cache", "student", "evaluate", "report"]
    assert all(isinstance(s, UnitStage) for s in plan.stages)
    # one teacher per (language, seed), plus FT-Multi per seed: 3 × 3 = 9, not the 7 variants' 39
    assert sorted(stages["teachers"].items) == sorted(f"{n}.s{s}" for n in ["en", "fi", "multi"] for s in range(3))
    assert plan.teacher_trainings == {"trained": 9, "without_sharing": (2 + 1 + 1 + 1 + 2 + 2 + 2) * 3}
    assert sorted(stages["cache"].items) == ["s0", "s1", "s2"]
    assert stages["cache"].specs["s1"].params["teachers"] == {"en": "en.s1", "fi": "fi.s1", "multi": "multi.s1"}
    # Mono students: one per language; every student of seed 1 reads only seed 1's teachers
    assert {i for i in stages["student"].items if i.startswith("kd-mono.")} == {
        f"kd-mono.{l}.s{s}" for l in LANGS for s in range(3)
    }
    spec = stages["student"].specs["mtkd-mono.fi.s1"]
    assert spec.needs == {"teachers": ("en.s1", "fi.s1"), "cache": ("s1",)} and spec.params["languages"] == ["fi"]
    assert spec.cfg.seed == 1 and spec.cfg.distill.weighting == "cosine-batch" and spec.cfg.wandb.group == "exp"
    assert spec.cfg.wandb.tags == ["paper", "mtkd-mono", "seed1"] and "experiment_dir" not in spec.params
    assert stages["student"].specs["kd-multi.s0"].needs["teachers"] == ("multi.s0",)
    ft = stages["evaluate"].specs["ft-mono.s2"].params["models"]
    assert ft == [{"stage": "teachers", "item": f"{l}.s2", "languages": [l]} for l in LANGS]
    assert stages["evaluate"].after == ("teachers", "student") and stages["report"].after == ("evaluate",)
    assert len(stages["evaluate"].items) == 7 * 3


def test_a_variant_that_changes_the_teachers_gets_its_own(tmp_path):
    grid = grid_from_dict({"variants": [{"from": "la-mtkd"}, {"name": "lr", "from": "la-mtkd",
                           "set": {"teacher_optim.lr": 1e-5}}, {"from": "ft-mono"}]})  # fmt: skip
    plan = plan_experiment(small_cfg(), grid, [0], tmp_path)
    teachers = sorted(next(s for s in plan.stages if s.name == "teachers").items)
    assert teachers[:2] == ["en.s0", "en.s0." + teachers[1].split(".")[2]] and len(teachers) == 4
    assert plan.teacher_trainings == {"trained": 4, "without_sharing": 6}  # ft-mono shares la-mtkd's


# ---------------------------------------------------------------------------- a grid through the graph


@pytest.fixture(scope="module")
def fake_experiment(tmp_path_factory):
    run = tmp_path_factory.mktemp("exp") / "grid"
    grid = load_grid("paper").select(["ft-multi", "mtkd-multi", "la-mtkd"])
    result = run_experiment(small_cfg(), grid, [0, 1], run, executor="debug", recipes=RECIPES, statistics=FAST)
    return run, grid, result


def test_grid_runs_every_unit_once_and_teachers_once_per_language_and_seed(fake_experiment):
    run, _, result = fake_experiment
    log = calls(run)
    teachers = Counter(line for line in log if line.startswith("teacher"))
    assert teachers == Counter(f"teacher {n} seed {s}" for n in ["en", "fi", "multi"] for s in (0, 1))
    assert [line for line in log if line.startswith("cache")] == ["cache seed 0 en,fi", "cache seed 1 en,fi"]
    assert sorted(line for line in log if line.startswith("student")) == [
        f"student {v}.s{s} kd=0.25 teachers=en,fi" for v in ("la-mtkd", "mtkd-multi") for s in (0, 1)
    ]
    assert log[-1] == "report" and len(log) == 6 + 2 + 4 + 6 + 1
    assert result["teacher_trainings"] == {"trained": 6, "without_sharing": 10}
    assert Path(result["report"]["markdown"]).exists()


def test_report_statistics_match_lakd_eval_paired(fake_experiment):
    run, _, _ = fake_experiment
    report = read_report(run)
    assert report["baseline"] == "ft-multi" and report["missing"] == []
    assert set(report["summary"]) == {"ft-multi", "mtkd-multi", "la-mtkd"}
    # mean ± sd over the seeds, from each run's own evaluation
    per_seed = [report["runs"]["la-mtkd"][s]["overall"]["ua"] for s in ("0", "1")]
    assert report["summary"]["la-mtkd"]["overall"]["ua"]["mean"] == pytest.approx(np.mean(per_seed))
    assert report["summary"]["la-mtkd"]["overall"]["ua"]["sd"] == pytest.approx(np.std(per_seed, ddof=1))
    # the paired comparison is lakd.eval.paired on [seeds, utterances] of the predictions on disk
    preds = {
        v: [
            read_predictions(run / "grids/paper" / report["runs"][v][s]["report_dir"] / "predictions.csv", LABELS)
            for s in "01"
        ]
        for v in ("ft-multi", "la-mtkd")
    }
    keys = sorted(k for k in preds["ft-multi"][0] if preds["ft-multi"][0][k][2] == "fi")
    y = np.array([[p[k][0] for k in keys] for p in preds["ft-multi"]])
    a = np.array([[p[k][1] for k in keys] for p in preds["ft-multi"]])
    b = np.array([[p[k][1] for k in keys] for p in preds["la-mtkd"]])
    speakers = [preds["ft-multi"][0][k][3] for k in keys]
    expected = paired_comparison(y, a, b, clusters=speakers, n_bootstrap=200, n_permutations=400)
    got = report["comparisons"]["la-mtkd"]["fi"]
    for k in ("diff", "low", "high", "p_value", "seeds", "n", "clustered"):
        assert got[k] == pytest.approx(expected[k]), k
    assert got["seed_list"] == [0, 1] and got["clustered"]
    # a 20-point gain on 96 utterances × 2 seeds is significant after Holm; a 2-point one is not
    overall = report["comparisons"]["la-mtkd"]["overall"]
    assert overall["diff"] > 0.1 and overall["significant"] and overall["p_holm"] >= overall["p_value"]
    assert not report["comparisons"]["mtkd-multi"]["overall"]["significant"]
    md = (run / "grids" / "paper" / "report.md").read_text()
    assert "| LA-MTKD |" in md and "Holm-adjusted" in md and "6 teacher trainings" in md
    for name in ("ua_per_language", "per_class_recall", "confusion"):
        assert (run / "grids" / "paper" / report["figures"][name]).read_bytes()[:4] == b"\x89PNG"


def test_relaunch_skips_and_a_changed_variant_reruns_only_what_reads_it(fake_experiment, tmp_path):
    run, grid, _ = fake_experiment
    before = len(calls(run))
    again = run_experiment(small_cfg(), grid, [0, 1], run, executor="debug", recipes=RECIPES, statistics=FAST)
    assert again["jobs"] == {} and len(calls(run)) == before
    changed = grid_from_dict(
        {
            "name": "paper",
            "baseline": "ft-multi",
            "variants": [
                {"from": "ft-multi"},
                {"from": "mtkd-multi"},
                {"from": "la-mtkd", "set": {"distill.kd_weight": 0.5}},
            ],
        }  # fmt: skip
    )
    out = run_experiment(small_cfg(), changed, [0, 1], run, executor="debug", recipes=RECIPES, statistics=FAST)
    new = calls(run)[before:]
    assert sorted(new) == sorted(
        [
            "student la-mtkd.s0 kd=0.5 teachers=en,fi",
            "student la-mtkd.s1 kd=0.5 teachers=en,fi",
            "evaluate la-mtkd seed 0",
            "evaluate la-mtkd seed 1",
            "report",
        ]  # fmt: skip
    )
    assert sorted(out["changed"]) == ["evaluate[la-mtkd.s0]", "evaluate[la-mtkd.s1]", "report[paper]",
                                      "student[la-mtkd.s0]", "student[la-mtkd.s1]"]  # fmt: skip
    # the grid in `lakd status`
    status = grid_status(run, "paper")
    assert [r["variant"] for r in status["rows"]] == ["ft-multi", "mtkd-multi", "la-mtkd"]
    assert all(c["state"] == "done" and 0 <= c["ua"] <= 1 for r in status["rows"] for c in r["cells"].values())
    res = CliRunner().invoke(app, ["status", str(run)])
    assert res.exit_code == 0 and "seed 1" in res.output and "LA-MTKD" in res.output, res.output
    assert all(r["state"] == "done" for r in stage_status(run))


def test_report_lists_a_missing_run_and_status_shows_the_failure(tmp_path):
    run = tmp_path / "exp"
    grid = load_grid("paper").select(["ft-multi", "la-mtkd"])

    def failing_student(cfg, inputs, **kw):
        raise RuntimeError("student diverged")

    from lakd.launch import LaunchError

    with pytest.raises(LaunchError, match=r"student\[la-mtkd.s0\] failed .*student diverged"):
        run_experiment(small_cfg(), grid, [0], run, executor="debug", recipes={**RECIPES, "student": failing_student})
    cells = {r["variant"]: r["cells"]["0"] for r in grid_status(run, "paper")["rows"]}
    assert cells["ft-multi"]["state"] == "done" and cells["la-mtkd"]["state"] == "failed"
    assert cells["la-mtkd"]["stage"] == "student[la-mtkd.s0]"
    res = CliRunner().invoke(app, ["experiment", "report", str(run)])  # a partial report of what finished
    assert res.exit_code == 0, res.output
    assert read_report(run)["missing"] == ["la-mtkd seed 0"] and "FT-Multi" in res.output


# --------------------------------------------------------------------------------------------- statistics


def test_holm_and_mean_sd():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([0.2, 0.01]) == pytest.approx([0.2, 0.02])
    m = mean_sd([0.5, 0.7, None])
    assert m["mean"] == pytest.approx(0.6) and m["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1)) and m["n"] == 2
    assert mean_sd([0.4])["sd"] == 0.0 and mean_sd([None])["mean"] is None


def test_experiment_cli_lists_grids_and_refuses_bad_input(tmp_path):
    res = CliRunner().invoke(app, ["experiment", "grids"])
    assert res.exit_code == 0 and "MTKD-Mono" in res.output and "no-lang-emb" in res.output
    res = CliRunner().invoke(app, ["experiment", "run", "--grid", "nope", "--run-dir", str(tmp_path)])
    assert res.exit_code == 2 and "not a built-in grid" in res.output
    res = CliRunner().invoke(app, ["experiment", "run", "--seeds", "0,x", "--run-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--seeds" in res.output


# -------------------------------------------------------------------- end to end with real tiny models

TINY = [
    "synth.speakers_per_language=3",
    "synth.utterances_per_speaker=8",
    "synth.splits={train: 1, dev: 1, test: 1}",
    "languages=[en, fi]",
    "teacher_optim.epochs=1",
    "student_optim.epochs=1",
    "wandb.mode=offline",
    "threads=1",
    "launch.resources.default={cpus: 1, mem_gb: 3, time_min: 20}",
]


def _tiny_grid_cli(run: Path, executor: str, *extra: str):
    args = ["experiment", "run", "--config", "tiny", "--grid", "paper", "--variants", "mtkd-multi,la-mtkd"]
    args += ["--baseline", "mtkd-multi", "--seeds", "0,1", "--executor", executor, "--run-dir", str(run)]
    args += ["--bootstrap", "200", "--permutations", "500", *extra]
    for o in TINY:
        args += ["--set", o]
    return CliRunner().invoke(app, args)


def _check_tiny_grid(run: Path) -> dict:
    report = read_report(run)
    assert report["missing"] == [] and set(report["summary"]) == {"mtkd-multi", "la-mtkd"}
    assert report["teacher_trainings"] == {"trained": 4, "without_sharing": 8}  # 2 languages × 2 seeds, shared
    plan = read(run / "grids" / "paper" / "experiment.json")
    teacher_dirs = {}
    for item, unit in plan["units"]["teachers"].items():
        done = read(run / "stages" / "teachers" / item / "done.json")
        assert done["output"].startswith(unit["dir"])
        teacher_dirs[item] = done["output"]
    assert sorted(teacher_dirs) == ["en.s0", "en.s1", "fi.s0", "fi.s1"]
    for v in ("mtkd-multi", "la-mtkd"):  # both students of a seed distil the very same teacher checkpoints
        for s in (0, 1):
            student = read(run / "stages" / "student" / f"{v}.s{s}" / "done.json")["output"]
            meta = read(Path(student) / "lakd.json")["meta"]
            assert meta["teachers"] == {l: teacher_dirs[f"{l}.s{s}"] for l in ("en", "fi")}
    for v in ("mtkd-multi", "la-mtkd"):  # the training section, from the real trainers' metrics.jsonl
        t = report["training"][v]
        assert t["models"] == 2 and 0 < t["best_step"] <= t["steps"] and 0 <= t["best_at_last_eval"] <= 2
    cmp = report["comparisons"]["la-mtkd"]
    assert set(cmp) == {"en", "fi", "overall"} and cmp["overall"]["seeds"] == 2 and cmp["overall"]["n"] == 16
    assert cmp["overall"]["low"] <= cmp["overall"]["diff"] <= cmp["overall"]["high"]
    assert 0 < cmp["overall"]["p_value"] <= 1 and "significant" in cmp["overall"]
    for v in ("mtkd-multi", "la-mtkd"):
        ua = report["summary"][v]["overall"]["ua"]
        assert ua["n"] == 2 and ua["mean"] == pytest.approx(np.mean(ua["values"]))
    return report


@pytest.mark.slow
def test_tiny_grid_through_the_graph_with_the_local_executor(tmp_path):
    run = tmp_path / "grid"
    res = _tiny_grid_cli(run, "local", "--max-parallel", "2")
    assert res.exit_code == 0, res.output + repr(res.exception)
    _check_tiny_grid(run)
    assert "LA-MTKD" in res.output and "Δ UA vs MTKD-Multi" in res.output
    rows = stage_status(run)
    assert {r["state"] for r in rows} == {"done"} and all(r["job_id"].isdigit() for r in rows)
    # W&B: one group (the experiment), every run's offline files under <experiment>/wandb
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) >= 4 + 4 + 4 + 1  # teachers, students, evaluations, the summary


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_grid_on_slurm_as_job_arrays(tmp_path):
    from test_slurm_cluster import _slurm_problem

    problem = _slurm_problem()
    if problem:
        import os

        if os.environ.get("LAKD_REQUIRE_SLURM") == "1":
            pytest.fail(problem)
        pytest.skip(f"{problem}; start it with: sudo slurm/local-cluster.sh start")
    run = tmp_path / "grid"
    res = _tiny_grid_cli(run, "slurm")
    assert res.exit_code == 0, res.output + repr(res.exception)
    _check_tiny_grid(run)
    graph = read(run / "stages" / "graph.json")
    assert [s["name"] for s in graph["stages"]] == ["shards", "teachers", "cache", "student", "evaluate", "report"]
    rows = stage_status(run)
    for stage, n in (("teachers", 4), ("student", 4), ("evaluate", 4)):
        jobs = [r["job_id"] for r in rows if r["stage"] == stage]
        assert len(jobs) == n and len({j.split("_")[0] for j in jobs}) == 1, (stage, jobs)  # one array
    teacher_array = next(r["job_id"] for r in rows if r["stage"] == "teachers").split("_")[0]
    cache_job = next(r["job_id"] for r in rows if r["stage"] == "cache").split("_")[0]
    submission = next((run / "stages" / "student" / "logs").rglob("*_submission.sh")).read_text()
    dependency = next(line for line in submission.splitlines() if line.startswith("#SBATCH --dependency="))
    assert dependency == f"#SBATCH --dependency=afterok:{':'.join(sorted([teacher_array, cache_job]))}"
    assert "#SBATCH --array=0-3" in submission  # the four students (2 variants × 2 seeds) run in parallel


def test_the_lowres_grid_plans_balanced_variants_with_their_own_multi_model(tmp_path):
    """lakd/configs/grids/lowres.yaml: α = 0 changes what FT-Multi learns, so it gets its own multi model."""
    grid = load_grid("lowres")
    assert grid.baseline == "ft-multi"
    assert grid.variant("ft-multi-balanced").overrides == {"data.language_alpha": 0.0}
    assert grid.variant("la-mtkd-balanced").overrides["distill.weighting"] == "route"
    plan = plan_experiment(small_cfg(), grid, [0], tmp_path / "exp")
    teachers = {s.name: s for s in plan.stages}["teachers"].items
    multi = [t for t in teachers if t.startswith("multi.s0")]
    assert len(multi) == 2  # natural and balanced FT-Multi


def test_student_only_augmentation_shares_the_plain_variants_teachers(tmp_path):
    grid = grid_from_dict(
        {
            "variants": [
                {"from": "la-mtkd"},
                {"name": "la-noise", "from": "la-mtkd", "set": {"data.augment.noise_prob": 0.5,
                                                                "data.augment.apply_to": ["student"]}},
                {"name": "ft-noise", "from": "ft-multi", "set": {"data.augment.noise_prob": 0.5}},
            ]
        }
    )  # fmt: skip
    stages = {s.name: s for s in plan_experiment(small_cfg(), grid, [0], tmp_path / "exp").stages}
    # la-noise reads la-mtkd's teachers and cache; ft-noise's model is an augmented FT-Multi of its own
    assert sorted(stages["teachers"].items)[:2] == ["en.s0", "fi.s0"] and len(stages["cache"].items) == 1
    multi = [t for t in stages["teachers"].items if t.startswith("multi.s0")]
    assert len(multi) == 1 and multi[0] != "multi.s0"  # augmented: not the plain FT-Multi's key
    assert stages["student"].specs["la-noise.s0"].needs == stages["student"].specs["la-mtkd.s0"].needs


def test_unit_keys_ignore_settings_at_their_defaults_and_reruns_ignore_settings_added_later():
    from lakd.config.diff import non_default_settings, result_settings, settings_changes

    cfg = small_cfg()
    settings = result_settings(cfg, "student")
    assert "data.augment.mixup_prob" in settings and "data.augment.mixup_prob" not in non_default_settings(settings)
    changed = cfg.copy(**{"distill.temperature": 2.0})
    assert non_default_settings(result_settings(changed, "student"))["distill.temperature"] == 2.0
    # a run recorded before lakd had mixup: the new key at its default is no change; away from it, it is
    older = {k: v for k, v in settings.items() if not k.startswith("data.augment.mixup")}
    assert settings_changes(older, settings) == []
    newer = {**settings, "data.augment.mixup_prob": 0.5}
    assert settings_changes(older, newer) == ["data.augment.mixup_prob: (unset) → 0.5"]


@pytest.mark.parametrize("name", sorted(p.stem for p in GRIDS_DIR.glob("*.yaml")))
def test_every_shipped_grid_loads_and_plans(tmp_path, name):
    grid = load_grid(name)
    plan = plan_experiment(small_cfg(), grid, [0, 1], tmp_path / "exp")
    assert len({s.name: s for s in plan.stages}["evaluate"].items) == 2 * len(grid.variants)
    if name == "augment-la":  # student-only augmentation: every variant reads the one set of teachers per seed
        assert plan.teacher_trainings["trained"] == 2 * len(LANGS)
