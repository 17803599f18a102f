"""End to end on the CPU: the whole pipeline through the job graph (local executor), the paper grid (through
its `paper-table` alias), and the evaluate CLI, on a small synthesized corpus with tiny models. Slow (minutes),
so marked `slow`."""

import json
from pathlib import Path

import pytest
from tiny_models import TINY_RUN
from typer.testing import CliRunner

from lakd.cli import app

LANGS = ["en", "fi", "fr"]


def _set(overrides):
    return sum((["--set", o] for o in overrides), [])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    res = CliRunner().invoke(app, ["demo", "--run-dir", str(run_dir), *_set(TINY_RUN)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return run_dir, res.output


@pytest.mark.slow
def test_demo_runs_every_stage_and_prints_the_table(demo_run):
    run_dir, output = demo_run
    # every stage of the graph finished and left its outputs
    for lang in LANGS:
        assert (run_dir / "teachers" / lang / "best" / "model.safetensors").exists()
        assert (run_dir / "stages" / "teachers" / lang / "done.json").exists()
    manifest = json.loads((run_dir / "cache" / "manifest.json").read_text())
    assert set(manifest["teachers"]) == set(LANGS)
    meta = json.loads((run_dir / "student" / "best" / "lakd.json").read_text())
    assert meta["languages"] == LANGS
    # the student checkpoint loads with transformers alone (no lakd internals needed for the backbone)
    from transformers import Wav2Vec2Model

    Wav2Vec2Model.from_pretrained(run_dir / "student" / "best")
    # results table: FT-Mono and LA-MTKD rows with a UA/WA cell per language, also saved
    table = (run_dir / "results.md").read_text()
    assert "| FT-Mono |" in table and "| LA-MTKD |" in table
    assert all(f"{l} UA" in table for l in LANGS) and "LA-MTKD" in output
    report = json.loads((run_dir / "eval" / "la-mtkd" / "test" / "metrics.json").read_text())
    groups = report["metrics"]["groups"]
    assert set(groups) == set(LANGS) and all(0.0 <= g["ua"] <= 1.0 for g in groups.values())
    assert sum(g["n"] for g in groups.values()) == 3 * 8  # the one test speaker per language, every utterance once
    assert (run_dir / "eval" / "la-mtkd" / "test" / "confusion").is_dir()


@pytest.mark.slow
def test_relaunch_skips_finished_stages_and_status_reports_done(demo_run):
    run_dir, _ = demo_run
    before = (run_dir / "student" / "best" / "model.safetensors").stat().st_mtime_ns
    res = CliRunner().invoke(app, ["launch", "--run-dir", str(run_dir), *_set(TINY_RUN)])
    assert res.exit_code == 0, res.output
    assert (run_dir / "student" / "best" / "model.safetensors").stat().st_mtime_ns == before
    res = CliRunner().invoke(app, ["status", str(run_dir)])
    assert res.exit_code == 0
    assert res.output.count("done") >= 7  # shards, 3 teachers, cache, student, evaluate


@pytest.mark.slow
def test_evaluate_cli_writes_reports(demo_run, tmp_path):
    run_dir, _ = demo_run
    out = tmp_path / "eval"
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run_dir / "student" / "best"),
            "--shards",
            str(run_dir / "data" / "test"),
            "--out",
            str(out),
            "--bootstrap",
            "200",
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    overall = metrics["metrics"]["overall"]
    assert overall["n"] == 24 and overall["ua_ci"]["low"] <= overall["ua"] <= overall["ua_ci"]["high"]
    assert any(p.suffix == ".png" for p in (out / "confusion").iterdir())


@pytest.mark.slow
def test_paper_table_is_the_paper_grid_with_one_seed(tmp_path):
    """`lakd experiment paper-table` runs the seven rows of the `paper` grid as jobs (debug executor: in this
    process), with the published presets on the plain student and one student per language for the Mono rows."""
    run_dir = tmp_path / "paper"
    args = ["experiment", "paper-table", "--run-dir", str(run_dir), "--executor", "debug"]
    res = CliRunner().invoke(app, [*args, *_set([*TINY_RUN, "languages=[en, fi]"])])
    assert res.exit_code == 0, res.output + repr(res.exception)
    report = json.loads((run_dir / "grids" / "paper" / "report.json").read_text())
    names = ["ft-mono", "ft-multi", "kd-mono", "kd-multi", "mtkd-mono", "mtkd-multi", "la-mtkd"]
    assert [v["name"] for v in report["variants"]] == names and set(report["summary"]) == set(names)
    assert report["seeds"] == [0] and report["baseline"] == "ft-multi"
    for name in names:
        assert set(report["runs"][name]["0"]["groups"]) == {"en", "fi"}, name
        assert report["runs"][name]["0"]["overall"]["n"] == 2 * 8, name  # Mono runs: each model on its language
    assert set(report["comparisons"]) == set(names) - {"ft-multi"}
    md = (run_dir / "grids" / "paper" / "report.md").read_text()
    for label in ("FT-Mono", "FT-Multi", "KD-Mono", "KD-Multi", "MTKD-Mono", "MTKD-Multi", "LA-MTKD"):
        assert f"| {label} |" in md

    def student(item):
        out = json.loads((run_dir / "stages" / "student" / item / "done.json").read_text())["output"]
        return json.loads((Path(out) / "lakd.json").read_text())

    kd, mt, la = student("kd-multi.s0"), student("mtkd-multi.s0"), student("la-mtkd.s0")
    assert list(kd["meta"]["teachers"]) == ["multi"]  # KD: the FT-Multi model is the one teacher
    assert (kd["meta"]["distill"]["kd_weight"], kd["meta"]["distill"]["kl_reduction"]) == (0.75, "mean")
    assert not kd["model"]["language_embedding"]
    assert list(mt["meta"]["teachers"]) == ["en", "fi"] and mt["meta"]["distill"]["weighting"] == "cosine-batch"
    assert (mt["meta"]["distill"]["kd_weight"], mt["meta"]["distill"]["kl_reduction"]) == (0.25, "mean")
    assert la["meta"]["distill"]["weighting"] == "route"
    assert la["model"]["language_embedding"] and la["model"]["hierarchical_attention"]
    for lang in ("en", "fi"):  # Mono = the student's training data: one language
        assert student(f"kd-mono.{lang}.s0")["meta"]["languages_trained"] == [lang]
        assert student(f"mtkd-mono.{lang}.s0")["meta"]["languages_trained"] == [lang]
