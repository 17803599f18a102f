"""The command line as a user meets it: --version, help on every option, `status` taking the run directory
the way the other commands do, one-line errors."""

import json

import typer
from typer.testing import CliRunner

import lakd
from lakd.cli import app


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"lakd {lakd.__version__}"


def test_every_option_and_argument_has_help():
    root = typer.main.get_command(app)
    missing = [
        f"{' '.join(path)} {param.name}"
        for path, cmd in _commands(root)
        for param in cmd.params
        if not getattr(param, "help", None)
    ]
    missing += [p.name for p in root.params if not getattr(p, "help", None)]
    assert not missing, f"options without help text: {missing}"


def _launched_run(tmp_path):
    run = tmp_path / "run"
    (run / "stages" / "shards").mkdir(parents=True)
    (run / "stages" / "graph.json").write_text(
        json.dumps({"executor": "local", "stages": [{"name": "shards", "items": [], "after": []}]})
    )
    (run / "stages" / "shards" / "state.json").write_text(json.dumps({"state": "running", "job_id": "42"}))
    return run


def test_status_takes_the_run_dir_as_argument_option_or_config(tmp_path):
    run = _launched_run(tmp_path)
    runner = CliRunner(env={"COLUMNS": "200"})
    outputs = [
        runner.invoke(app, ["status", str(run)]),
        runner.invoke(app, ["status", "--run-dir", str(run)]),
        runner.invoke(app, ["status", "--config", "tiny", "--set", f"run_dir={run}"]),
    ]
    for res in outputs:
        assert res.exit_code == 0, res.output
        assert "shards" in res.stdout and "running" in res.stdout and "42" in res.stdout
    res = runner.invoke(app, ["status"])
    assert res.exit_code == 2 and "--run-dir" in res.stderr
    res = runner.invoke(app, ["status", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "Traceback" not in res.output and "no stages/" in res.stderr


def test_stage_watcher_prints_starts_progress_and_ends(tmp_path):
    """What `lakd launch` / `lakd demo` print while jobs write their logs to files."""
    import io
    import time

    from rich.console import Console

    from lakd.cli_watch import StageWatcher

    run = tmp_path / "run"
    unit = run / "stages" / "teachers" / "en"
    unit.mkdir(parents=True)
    (run / "stages" / "graph.json").write_text(
        json.dumps({"executor": "local", "stages": [{"name": "teachers", "items": ["en"], "after": []}]})
    )
    out = io.StringIO()
    console = Console(file=out, width=200)

    def wait_for(text):
        deadline = time.monotonic() + 10
        while text not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert text in out.getvalue(), out.getvalue()

    with StageWatcher(run, console, poll_s=0.02, every_s=0.0):
        (unit / "state.json").write_text(json.dumps({"state": "running", "job_id": "7"}))
        wait_for("teachers[en]: running")
        (run / "teachers" / "en").mkdir(parents=True)
        records = [
            {"event": "start", "time": 1000.0, "total_steps": 100, "step": 0},
            {"step": 40, "time": 1040.0, "train/loss": 1.25},  # 1 s a step: 60 steps left
        ]
        (run / "teachers" / "en" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        wait_for("teachers[en]: step 40/100 (40%) ETA 0:01:00 train/loss=1.25")
        (unit / "done.json").write_text(json.dumps({"output": None}))
    assert "teachers[en]: done" in out.getvalue()
    assert out.getvalue().count("teachers[en]: running") == 1
