"""`sbatch slurm/distill.sh tiny` on the real local SLURM, end to end: synthesized shards, a teacher job array,
the teacher cache, the student and its evaluation — every stage a SLURM job chained with afterok — then the
results are checked. Needs `slurm/local-cluster.sh start` (CI does it); skipped with the reason otherwise."""

import json
import os
from pathlib import Path

import pytest

from tests.test_slurm_cluster import REPO, finished, job_states, sbatch, slurm_cluster, wait_until  # noqa: F401
from lakd.launch import stage_status

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["synth.speakers_per_language=3", "synth.utterances_per_speaker=8", "synth.splits={train: 1, dev: 1, test: 1}",
        "teacher_optim.epochs=1", "student_optim.epochs=1", "wandb.mode=offline", "threads=1",
        "launch.resources.default={cpus: 1, mem_gb: 3, time_min: 20}"]


def test_sbatch_distill_sh_runs_the_tiny_pipeline(tmp_path):
    run = tmp_path / "run"
    args = [str(REPO / "slurm" / "distill.sh"), "tiny", "--run-dir", str(run)]
    for o in TINY:
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
