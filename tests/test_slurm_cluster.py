"""Against a real SLURM (slurm/local-cluster.sh start): the cluster itself (srun, arrays, dependencies,
scancel, sacct, requeue) and lakd's job graph on it (afterok chaining, failure handling, status from sacct,
preemption and `scontrol requeue` of a running stage that must resume, not restart).

Skipped with the reason when no SLURM controller answers; LAKD_REQUIRE_SLURM=1 (CI) makes that a failure.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest
from counting_loop import counting_training_loop
from tiny_models import TINY_RUN

from lakd.config import Config, StageResources
from lakd.launch import LaunchError, StageTask, launch, stage_status
from lakd.launch.executors import make_executor
from lakd.launch.units import unit_dir

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the jobs unpickle the stand-in recipes below

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def _slurm_problem() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed here (no sinfo/sbatch on PATH)"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if r.returncode != 0:
        return f"no SLURM controller answers (sinfo: {r.stderr.strip()})"
    states = r.stdout.split()
    if not any(s.rstrip("*~#!%$@^-") in ("idle", "mix", "alloc", "comp") for s in states):
        return f"no usable SLURM node (sinfo states: {states})"
    if subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True).returncode != 0:
        return "sacct does not work (slurmdbd not running): submitit needs it to follow jobs"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    problem = _slurm_problem()
    if problem:
        msg = f"{problem}; start it with: sudo slurm/local-cluster.sh start"
        if os.environ.get("LAKD_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def sh(*cmd: str, timeout: float = 60) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout


def sbatch(*args: str, cwd: Path) -> str:
    """Submit with the job's working directory `cwd` (options must come before a script path)."""
    return sh("sbatch", "--parsable", "--chdir", str(cwd), *args).strip().split(";")[0]


def job_states(job_id: str, all_runs: bool = False) -> list[str]:
    """States of a job's allocations in sacct (with -D also those before each requeue)."""
    out = sh("sacct", "-n", "-P", "-X", "-o", "State", "-j", job_id, *(["-D"] if all_runs else []))
    return [line.split(" ")[0] for line in out.splitlines() if line]


def wait_until(predicate, timeout: float, what: str, every: float = 0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def finished(job_id: str) -> bool:
    states = job_states(job_id)
    return bool(states) and all(s not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING") for s in states)


# ----------------------------------------------------------------------------------- the cluster itself


def test_srun_runs_two_tasks():
    out = sh("srun", "-n2", "-t", "1", "bash", "-c", "echo task=$SLURM_PROCID of $SLURM_NTASKS")
    assert sorted(out.split("\n")[:2]) == ["task=0 of 2", "task=1 of 2"]


def test_array_dependency_cancel_and_sacct(tmp_path):
    arr = sbatch("--array=0-2", "-t", "1", "-o", "arr_%a.out", "--wrap", "echo item=$SLURM_ARRAY_TASK_ID", cwd=tmp_path)
    join = sbatch(f"--dependency=afterok:{arr}", "-t", "1", "-o", "join.out", "--wrap", "cat arr_*.out", cwd=tmp_path)
    bad = sbatch("-t", "1", "--wrap", "exit 3", cwd=tmp_path)
    never = sbatch(f"--dependency=afterok:{bad}", "-t", "1", "--wrap", "touch never", cwd=tmp_path)
    sleeper = sbatch("-t", "5", "--wrap", "sleep 300", cwd=tmp_path)
    wait_until(lambda: job_states(sleeper) == ["RUNNING"], 60, "the sleeper to run")
    sh("scancel", sleeper)
    # slurmdbd records each array task when it reaches it: until then sacct lists fewer tasks, all of them finished,
    # so wait for every job's full final record rather than for "all listed states are final"
    expected = {arr: ["COMPLETED"] * 3, join: ["COMPLETED"], bad: ["FAILED"], never: ["CANCELLED"]}
    expected[sleeper] = ["CANCELLED"]
    for j, states in expected.items():
        wait_until(lambda j=j, n=len(states): finished(j) and len(job_states(j)) == n, 90, f"job {j} to end")
    assert (tmp_path / "join.out").read_text().split() == ["item=0", "item=1", "item=2"]
    assert {j: job_states(j) for j in expected} == expected
    assert not (tmp_path / "never").exists()  # kill_invalid_depend


def test_scontrol_requeue_restarts_a_batch_job(tmp_path):
    script = tmp_path / "count.sh"
    script.write_text(
        textwrap.dedent("""\
        #!/bin/bash
        n=$(cat progress 2>/dev/null || echo 0)
        echo "start=$n restart=${SLURM_RESTART_COUNT:-0}" >> starts
        while [ $n -lt 30 ]; do n=$((n+1)); echo $n > progress.tmp; mv progress.tmp progress; sleep 0.2; done
        """)
    )
    job = sbatch("-t", "2", "-o", "out.log", str(script), cwd=tmp_path)
    wait_until(
        lambda: (tmp_path / "progress").exists() and int((tmp_path / "progress").read_text()) >= 5,
        60,
        "the job to count",
    )
    sh("scontrol", "requeue", job)
    wait_until(lambda: finished(job), 120, "the requeued job to finish")
    starts = (tmp_path / "starts").read_text().split("\n")
    assert starts[0] == "start=0 restart=0" and starts[1].endswith("restart=1")
    assert int(starts[1].split()[0].split("=")[1]) >= 5  # continued from its progress file
    assert (tmp_path / "progress").read_text().strip() == "30"
    assert job_states(job, all_runs=True) == ["REQUEUED", "COMPLETED"]


# ------------------------------------------------------------------------------- the job graph on SLURM


def _note(cfg, line: str) -> None:
    with open(Path(cfg.run_dir) / "calls.log", "a") as f:
        f.write(line + "\n")


def fake_teacher(cfg, language):
    if (Path(cfg.run_dir) / f"FAIL_{language}").exists():
        raise RuntimeError(f"teacher {language} diverged")
    if (Path(cfg.run_dir) / "SLOW").exists():
        time.sleep(float((Path(cfg.run_dir) / "SLOW").read_text()))
    _note(cfg, f"teacher {language} job={os.environ.get('SLURM_ARRAY_JOB_ID')}")
    return str(Path(cfg.run_dir) / "teachers" / language / "best")


def fake_cache(cfg, teacher_dirs):
    _note(cfg, "cache " + ",".join(sorted(teacher_dirs)))
    return str(Path(cfg.run_dir) / "cache")


def fake_student(cfg, teacher_dirs, cache_dir):
    _note(cfg, f"student {','.join(sorted(teacher_dirs))} {Path(cache_dir).name}")
    return str(Path(cfg.run_dir) / "student" / "best")


def fake_evaluate(cfg, checkpoint_dir):
    _note(cfg, "evaluate")
    return {"metrics": {"overall": {"ua": 0.5, "wa": 0.5}}}


RECIPES = {"teachers": fake_teacher, "cache": fake_cache, "student": fake_student, "evaluate": fake_evaluate}


def calls(run: Path) -> list[str]:
    return (run / "calls.log").read_text().splitlines() if (run / "calls.log").exists() else []


def small_cfg(languages=("en", "fi", "fr")) -> Config:
    cfg = Config(name="t", languages=list(languages))
    cfg.launch.resources = {"default": {"cpus": 1, "mem_gb": 0.5, "time_min": 5}}
    return cfg


def _state(run: Path, stage: str, item: str | None = None) -> dict:
    return json.loads((unit_dir(run, stage, item) / "state.json").read_text())


def test_graph_runs_on_slurm_with_afterok_chaining(tmp_path):
    run = tmp_path / "run"
    summary = launch(small_cfg(), run, executor="slurm", recipes=RECIPES, poll_s=1)
    teachers = summary["jobs"]["teachers"]
    base = teachers[0].split("_")[0]
    assert teachers == [f"{base}_0", f"{base}_1", f"{base}_2"]  # one job array
    order = [c.split(" job=")[0] for c in calls(run)]
    assert sorted(order[:3]) == ["teacher en", "teacher fi", "teacher fr"]
    assert order[3:] == ["cache en,fi,fr", "student en,fi,fr cache", "evaluate"]
    assert all(f"job={base}" in c for c in calls(run)[:3])
    cache_job = summary["jobs"]["cache"][0]
    submission = next((run / "stages" / "cache" / "logs" / cache_job).glob("*_submission.sh")).read_text()
    assert f"#SBATCH --dependency=afterok:{base}\n" in submission
    student_job = summary["jobs"]["student"][0]
    submission = next((run / "stages" / "student" / "logs" / student_job).glob("*_submission.sh")).read_text()
    assert f"#SBATCH --dependency=afterok:{base}:{cache_job}\n" in submission
    for stage, jobs in summary["jobs"].items():
        for j in jobs:
            assert job_states(j) == ["COMPLETED"], (stage, j)
    assert _state(run, "cache")["started_at"] >= max(_state(run, "teachers", l)["ended_at"] for l in ("en", "fi", "fr"))
    rows = stage_status(run)
    assert [r["state"] for r in rows] == ["done"] * 6 and rows[0]["job_id"] == f"{base}_0"
    assert Path(rows[0]["stdout"]).exists()

    again = launch(small_cfg(), run, executor="slurm", recipes=RECIPES, poll_s=1)
    assert again["jobs"] == {} and len(calls(run)) == 6  # all done: nothing submitted


def test_failed_stage_cancels_dependents_and_status_shows_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "FAIL_fi").write_text("")
    summary = launch(small_cfg(), run, executor="slurm", wait=False, recipes=RECIPES)  # returns at once
    assert set(summary["jobs"]) == {"teachers", "cache", "student", "evaluate"} and summary["outputs"] == {}

    def settled():
        rows = stage_status(run)
        return rows if all(r["state"] in ("done", "failed") for r in rows) else None

    rows = {(r["stage"], r["item"]): r for r in wait_until(settled, 120, "all stages to end", every=1)}
    assert rows[("teachers", "en")]["state"] == rows[("teachers", "fr")]["state"] == "done"
    assert rows[("teachers", "fi")]["state"] == "failed"
    assert "teacher fi diverged" in rows[("teachers", "fi")]["error"]
    for stage in ("cache", "student", "evaluate"):  # never started: SLURM cancelled them, status says so
        assert rows[(stage, None)]["state"] == "failed" and rows[(stage, None)]["live"] == "CANCELLED", stage
        assert rows[(stage, None)]["error"].startswith("never started: it needs "), stage
        assert _state(run, stage)["state"] == "pending"  # the marker alone would say pending forever

    (run / "FAIL_fi").unlink()
    summary = launch(small_cfg(), run, executor="slurm", recipes=RECIPES, poll_s=1)
    assert len(summary["jobs"]["teachers"]) == 1  # only fi is submitted again
    assert [c.split(" job=")[0] for c in calls(run)].count("teacher en") == 1
    assert [r["state"] for r in stage_status(run)] == ["done"] * 6


def test_wait_raises_with_the_failed_stage_and_cancels_what_needs_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "FAIL_en").write_text("")
    with pytest.raises(
        LaunchError,
        match=r"^stage teachers\[en\] failed \(job \d+_0\): RuntimeError: teacher en "
        r"diverged \(log: .*_log.err\)$",
    ):
        launch(small_cfg(), run, executor="slurm", recipes=RECIPES, poll_s=1)
    assert _state(run, "teachers", "fi")["state"] == _state(run, "teachers", "fr")["state"] == "done"
    for stage in ("cache", "student", "evaluate"):
        st = _state(run, stage)
        assert st["state"] == "failed" and st["error"] == "cancelled: it needs teachers, which failed", stage
        wait_until(lambda st=st: finished(st["job_id"]), 60, f"{stage} to be cancelled")
        assert job_states(st["job_id"]) == ["CANCELLED"]


def test_relaunch_refuses_while_the_graph_is_queued(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "SLOW").write_text("4")
    first = launch(small_cfg(["en"]), run, executor="slurm", wait=False, recipes=RECIPES)
    with pytest.raises(LaunchError, match=r"still queued or running on SLURM: teachers\[en\] \(job \d+\), cache"):
        launch(small_cfg(["en"]), run, executor="slurm", wait=False, recipes=RECIPES)
    rows = wait_until(
        lambda: (lambda r: r if all(x["state"] == "done" for x in r) else None)(stage_status(run)),
        90,
        "the first graph to finish",
        every=1,
    )
    assert [r["job_id"] for r in rows] == [first["jobs"][s][0] for s in ("teachers", "cache", "student", "evaluate")]
    assert len(calls(run)) == 4


# --------------------------------------------------------------------------------- requeue and resume

STEPS = 40


def counting_recipe(cfg, language):
    """Counts STEPS steps of 0.2 s, keeping its progress in a file (the recipe's own checkpoint)."""
    d = Path(cfg.run_dir) / "counter"
    d.mkdir(parents=True, exist_ok=True)
    progress = d / "progress"
    step = int(progress.read_text()) if progress.exists() else 0
    with open(d / "starts", "a") as f:
        f.write(f"{step} {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
    while step < STEPS:
        time.sleep(0.2)
        step += 1
        (d / "progress.tmp").write_text(str(step))
        os.replace(d / "progress.tmp", progress)
    return f"counted {step}"


def _submit_counter(run: Path):
    cfg = Config(name="t", run_dir=str(run))
    ex = make_executor("slurm", run / "logs" / "%j", StageResources(mem_gb=0.5, time_min=5), "t-count")
    job = ex.submit(StageTask("teachers", "en", counting_recipe, cfg, str(run)))
    progress = run / "counter" / "progress"
    wait_until(lambda: progress.exists() and int(progress.read_text() or 0) >= 5, 60, "the counter to count")
    return job, run / "counter"


def _starts(counter: Path) -> list[int]:
    return [int(line.split()[0]) for line in (counter / "starts").read_text().splitlines()]


def test_preempted_stage_is_requeued_by_submitit_and_resumes(tmp_path):
    job, counter = _submit_counter(tmp_path)
    job._interrupt()  # what SLURM does on preemption: SIGTERM, then the checkpoint signal (USR2)
    assert job.result() == f"counted {STEPS}"
    starts = _starts(counter)
    assert len(starts) == 2 and starts[0] == 0 and 5 <= starts[1] < STEPS  # resumed, not restarted
    st = _state(tmp_path, "teachers", "en")
    assert st["state"] == "done" and st["requeues"] == 1 and st["attempts"] == 2 and st["job_id"] == job.job_id
    wait_until(lambda: finished(job.job_id), 60, "SLURM to see the job end")  # the result is written first
    assert job_states(job.job_id, all_runs=True) == ["REQUEUED", "COMPLETED"]


def test_scontrol_requeue_of_a_running_stage_resumes(tmp_path):
    job, counter = _submit_counter(tmp_path)
    sh("scontrol", "requeue", job.job_id)  # an admin (or a node failure) requeues the job from outside
    assert job.result() == f"counted {STEPS}"
    starts = _starts(counter)
    assert len(starts) == 2 and starts[0] == 0 and 5 <= starts[1] < STEPS
    st = _state(tmp_path, "teachers", "en")
    assert st["state"] == "done" and st["attempts"] == 2 and st.get("requeues", 0) == 0


def test_time_limit_signal_makes_the_training_loop_save_and_the_job_resume(tmp_path):
    """--signal=USR2@N before the time limit: the loop saves at the next step, the job is requeued with the same
    id and continues at exactly that step."""
    cfg = Config(name="t", run_dir=str(tmp_path))
    ex = make_executor("slurm", tmp_path / "logs" / "%j", StageResources(mem_gb=1, time_min=5), "t-engine")
    loop = functools.partial(counting_training_loop, steps=STEPS, step_s=0.2)  # raises the engine's Preempted
    job = ex.submit(StageTask("teachers", "en", loop, cfg, str(tmp_path)))
    steps = tmp_path / "counter" / "steps"

    def counting():
        if (unit_dir(tmp_path, "teachers", "en") / "state.json").exists():
            assert _state(tmp_path, "teachers", "en")["state"] != "failed", _state(tmp_path, "teachers", "en")
        return steps.exists() and len(steps.read_text().split()) >= 5

    wait_until(counting, 120, "the loop to count")
    sh("scancel", "--signal=USR2", job.job_id)
    assert job.result() == f"counted {STEPS}"
    assert [int(x) for x in steps.read_text().split()] == list(range(1, STEPS + 1))  # none lost, none repeated
    starts = [int(x) for x in (tmp_path / "counter" / "starts").read_text().split()]
    assert len(starts) == 2 and starts[0] == 0 and 5 <= starts[1] < STEPS
    st = _state(tmp_path, "teachers", "en")
    assert st["state"] == "done" and st["requeues"] == 1 and st["attempts"] == 2
    wait_until(lambda: finished(job.job_id), 60, "SLURM to see the job end")  # the result is written first
    assert job_states(job.job_id, all_runs=True) == ["REQUEUED", "COMPLETED"]


# ------------------------------------------------------------------------------ a driver inside a job


def test_distill_sh_finds_the_checkout_and_runs_the_cli(tmp_path):
    """Under sbatch the script runs from a spool copy: it must still find the repo and its venv."""
    job = sbatch("-o", "driver.out", str(REPO / "slurm" / "distill.sh"), "no-such-config.yaml", cwd=tmp_path)
    wait_until(lambda: finished(job), 60, "the driver job")
    out = (tmp_path / "driver.out").read_text()
    assert "[distill.sh]" in out and f"(python: {REPO}/.venv/bin/python)" in out, out
    assert "no-such-config.yaml" in out and "not found" in out, out  # the CLI ran and named the problem
    assert job_states(job) == ["FAILED"]


def test_local_cluster_sh_start_is_idempotent_and_status_reports_up():
    script = REPO / "slurm" / "local-cluster.sh"
    status = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "cluster: up" in status.stdout, status.stdout
    if os.geteuid() != 0:
        pytest.skip("`local-cluster.sh start` needs root")
    t0 = time.time()
    r = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.time() - t0 < 15
    for daemon in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"):
        assert f"{daemon} running (pid" in r.stdout, (daemon, r.stdout)
    assert " started" not in r.stdout and "SLURM ready" in r.stdout


def test_driver_job_submits_the_graph_from_a_compute_node(tmp_path):
    """What slurm/distill.sh does: a small job that submits the stages (sbatch inside an allocation)."""
    run = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from lakd.config import Config
        from lakd.launch import launch

        def teacher(cfg, language):
            return str(Path(cfg.run_dir) / "teachers" / language)

        def cache(cfg, teacher_dirs):
            return str(Path(cfg.run_dir) / "cache")

        def student(cfg, teacher_dirs, cache_dir):
            return str(Path(cfg.run_dir) / "student")

        def evaluate(cfg, checkpoint_dir):
            return {{"checkpoint": checkpoint_dir}}

        cfg = Config(name="drv", languages=["en", "fi"])
        cfg.launch.resources = {{"default": {{"mem_gb": 0.5, "time_min": 5}}}}
        print(launch(cfg, {str(run)!r}, executor="slurm", wait=False,
                     recipes=dict(teachers=teacher, cache=cache, student=student, evaluate=evaluate)))
        """)
    )
    drv = sbatch("-t", "5", "--mem=1G", "-o", "driver.out", "--wrap", f"{sys.executable} {driver}", cwd=tmp_path)
    wait_until(lambda: finished(drv), 60, "the driver job")
    assert job_states(drv) == ["COMPLETED"], (tmp_path / "driver.out").read_text()

    def settled():
        rows = stage_status(run)
        return rows if all(r["state"] in ("done", "failed") for r in rows) else None

    rows = wait_until(settled, 120, "the graph submitted by the driver job", every=1)
    assert [r["state"] for r in rows] == ["done"] * 5, rows
    assert rows[-1]["output"] == {"checkpoint": str(run / "student")}


# ----------------------------------------------------------------------------------- the real pipeline
# `sbatch slurm/distill.sh tiny` end to end: synthesized shards, a teacher job array, the teacher cache, the
# student and its evaluation - every stage a SLURM job chained with afterok - then the results are checked.
TINY_PIPELINE = [*TINY_RUN, "launch.resources.default={cpus: 1, mem_gb: 3, time_min: 20}"]


def test_sbatch_distill_sh_runs_the_tiny_pipeline(tmp_path):
    run = tmp_path / "run"
    args = [str(REPO / "slurm" / "distill.sh"), "tiny", "--run-dir", str(run)]
    for o in TINY_PIPELINE:
        args += ["--set", o]
    driver = sbatch("-o", "driver.out", *args, cwd=tmp_path)
    wait_until(lambda: finished(driver), 120, "the driver job")
    assert job_states(driver) == ["COMPLETED"], (tmp_path / "driver.out").read_text()

    def settled():
        rows = stage_status(run)
        return rows if rows and all(r["state"] in ("done", "failed", "cancelled") for r in rows) else None

    rows = wait_until(settled, 900, "the tiny pipeline on SLURM", every=3)
    assert [r["state"] for r in rows] == ["done"] * len(rows), rows
    names = [r["stage"] for r in rows]
    assert names[0] == "shards" and names[-1] == "evaluate" and names.count("teachers") == 3
    assert rows[-1]["metric"]["test_ua"] >= 0.0  # the evaluation's headline numbers reach `lakd status`
    graph = json.loads((run / "stages" / "graph.json").read_text())
    assert graph  # the submitted graph is recorded for `lakd status`
    # outputs of every stage
    for lang in ("en", "fi", "fr"):
        assert (run / "teachers" / lang / "best" / "lakd.json").exists()
    assert (run / "cache" / "manifest.json").exists() and (run / "student" / "best" / "lakd.json").exists()
    report = json.loads((run / "eval" / "student" / "test" / "metrics.json").read_text())
    assert report["metrics"]["overall"]["n"] == 24
    # each teacher ran as one task of a SLURM job array
    teacher_jobs = {str(r["job_id"]) for r in rows if r["stage"] == "teachers"}
    assert len(teacher_jobs) == 3 and len({j.split("_")[0] for j in teacher_jobs}) == 1, teacher_jobs
