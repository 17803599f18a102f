"""Several grids run into one experiment directory (stand-in jobs, the real plan, graph and report): each keeps
its own plan and report under grids/<grid>/, they share the units they have in common, and going back to a grid,
or undoing a change, takes back the units that already ran instead of running them again."""

from __future__ import annotations

import pytest
from experiment_fakes import FAST, RECIPES, calls, small_cfg
from typer.testing import CliRunner

from lakd.cli import app
from lakd.experiments import load_grid, read_report, run_experiment
from lakd.experiments.grids import grid_from_dict


def _run(run, grid):
    return run_experiment(small_cfg(), grid, [0], run, executor="debug", recipes=RECIPES, statistics=FAST)


@pytest.fixture
def two_grids(tmp_path):
    run = tmp_path / "exp"
    paper = load_grid("paper").select(["ft-multi", "la-mtkd"])
    temps = grid_from_dict(
        {
            "name": "temps",
            "baseline": "la-mtkd",
            "variants": [
                {"from": "la-mtkd"},
                {"name": "la-t2", "from": "la-mtkd", "set": {"distill.temperature": 2}},
                {"from": "kd-multi"},  # its FT-Multi teacher joins the cache: the cache differs, la-mtkd does not
            ],
        }
    )
    first = _run(run, paper)
    n_paper = len(calls(run))
    second = _run(run, temps)
    return run, paper, temps, first, second, n_paper


def test_two_grids_in_one_directory_keep_their_own_reports_and_share_units(two_grids):
    run, paper, temps, first, second, n_paper = two_grids
    new = calls(run)[n_paper:]
    # the second grid reuses the teachers (FT-Multi's too) and la-mtkd's student and evaluation: its cache, which
    # now holds the FT-Multi teacher too, is computed again, but la-mtkd's student reads the same knowledge
    assert sorted(new) == sorted(
        [
            "cache seed 0 en,fi,multi",
            "student la-t2.s0 kd=0.25 teachers=en,fi",
            "student kd-multi.s0 kd=0.75 teachers=multi",
            "evaluate la-t2 seed 0",
            "evaluate kd-multi seed 0",
            "report",
        ]
    )
    assert read_report(run, "paper")["baseline"] == "ft-multi" and read_report(run, "temps")["baseline"] == "la-mtkd"
    assert set(read_report(run, "paper")["summary"]) == {"ft-multi", "la-mtkd"}
    assert first["report"]["markdown"] == str(run / "grids" / "paper" / "report.md")
    # back to the first grid: nothing runs, and its report is the one it wrote
    before = len(calls(run))
    again = _run(run, paper)
    assert again["jobs"] == {} and again["changed"] == [] and len(calls(run)) == before
    res = CliRunner().invoke(app, ["status", str(run)])
    assert res.exit_code == 0 and "FT-Multi" in res.output and "la-t2" in res.output, res.output  # both grids


def test_an_undone_change_takes_back_the_runs_of_the_old_settings(two_grids):
    run, paper, *_ = two_grids
    hot = grid_from_dict({"name": "paper", "baseline": "ft-multi", "variants": [
        {"from": "ft-multi"}, {"from": "la-mtkd", "set": {"distill.temperature": 3.0}}]})  # fmt: skip
    before = len(calls(run))
    changed = _run(run, hot)
    assert len(calls(run)) == before + 3 and "student[la-mtkd.s0]" in changed["changed"]
    before = len(calls(run))
    back = _run(run, paper)  # the original la-mtkd: its markers were set aside, not deleted
    assert calls(run)[before:] == ["report"] and "student[la-mtkd.s0]" not in back["changed"]
    assert (run / "stages" / "student" / "la-mtkd.s0" / "done.json").exists()


def test_report_of_a_directory_with_several_grids_needs_a_grid_and_can_repair_against_another_baseline(two_grids):
    run = two_grids[0]
    res = CliRunner().invoke(app, ["experiment", "report", str(run)])
    assert res.exit_code == 1 and "several grids" in res.output and "paper, temps" in res.output, res.output
    res = CliRunner().invoke(app, ["experiment", "report", str(run), "--grid", "nope"])
    assert res.exit_code == 1 and "no grid 'nope'" in res.output
    res = CliRunner().invoke(app, ["experiment", "report", str(run), "--grid", "paper", "--baseline", "la-mtkd"])
    assert res.exit_code == 0 and "Δ UA vs LA-MTKD" in res.output, res.output
    vs = run / "grids" / "paper" / "vs-la-mtkd"
    assert (vs / "report.md").exists() and (vs / "figures" / "confusion.png").exists()
    assert read_report(run, "paper")["baseline"] == "ft-multi"  # the grid's own report is untouched
    res = CliRunner().invoke(app, ["experiment", "report", str(run), "--grid", "paper", "--baseline", "nope"])
    assert res.exit_code == 2 and "baseline 'nope' is not a variant of grid paper" in res.output


def test_units_of_an_older_lakd_are_recognised_by_their_work_directory_and_old_key(tmp_path):
    """An older lakd kept one plan and report at the top of the directory; its markers (before key.json) name their
    key only in done.json's output path; and students were keyed with their cache's key until 2026-12. Such a
    directory is taken as it is: its plan moves into grids/<grid>/ and nothing but the report runs again."""
    import json
    import shutil

    from lakd.experiments.plan import plan_experiment

    run = tmp_path / "exp"
    paper = load_grid("paper").select(["ft-multi", "la-mtkd"])
    _run(run, paper)
    unit = plan_experiment(small_cfg(), paper, [0], run).units["student"]["la-mtkd.s0"]
    assert len(unit["aliases"]) == 1 and unit["aliases"][0] != unit["key"]
    for stage_dir in (run / "stages").glob("*/*"):
        (stage_dir / "key.json").unlink(missing_ok=True)  # as an older lakd left them
    for name in ("experiment.json", "report.md", "figures"):
        shutil.move(run / "grids" / "paper" / name, run / name)
    shutil.rmtree(run / "grids")
    done = run / "stages" / "student" / "la-mtkd.s0" / "done.json"
    done.write_text(done.read_text().replace(f"la-mtkd.s0-{unit['key']}", f"la-mtkd.s0-{unit['aliases'][0]}"))
    before = len(calls(run))
    again = _run(run, paper)
    assert calls(run)[before:] == ["report"] and again["changed"] == ["report[paper]"]  # only the report
    assert json.loads((done.parent / "key.json").read_text()) == {"key": unit["key"]}
    assert not (run / "experiment.json").exists() and (run / "grids" / "paper" / "figures").is_dir()


def test_a_renamed_variant_with_the_same_settings_reads_the_finished_unit_instead_of_training_again(two_grids):
    """`la-cool` is `la-t2` under another name (as `la-mtkd-e15` of one grid is `la-mtkd` of a config that made 15
    epochs its default): the same key, so its student is taken as done from la-t2's, and only the evaluation
    (whose plan names the variant) and the report run."""
    import json

    run = two_grids[0]
    renamed = grid_from_dict({"name": "renamed", "baseline": "la-mtkd", "variants": [
        {"from": "la-mtkd"}, {"name": "la-cool", "from": "la-mtkd", "set": {"distill.temperature": 2}}]})  # fmt: skip
    before = len(calls(run))
    res = _run(run, renamed)
    assert sorted(calls(run)[before:]) == ["evaluate la-cool seed 0", "report"], calls(run)[before:]
    done = json.loads((run / "stages" / "student" / "la-cool.s0" / "done.json").read_text())
    donor = json.loads((run / "stages" / "student" / "la-t2.s0" / "done.json").read_text())
    assert done["same_as"] == "la-t2.s0" and done["output"] == donor["output"]
    assert "student[la-cool.s0]" not in res["changed"]
    before = len(calls(run))
    assert _run(run, renamed)["jobs"] == {} and calls(run)[before:] == []  # and it stays done
