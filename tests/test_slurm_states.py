"""Reading job states from sacct and squeue, with stand-in commands that answer like SLURM does mid-race.

The real SLURM tests (test_slurm_cluster.py) cannot make slurmdbd lag on purpose; these stand-ins replay the
answers seen there: sacct already knows the first job of a graph but not the one submitted a moment later.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lakd.launch.slurm_states import _expand_job_ids, slurm_job_states


def _command(bin_dir: Path, name: str, output: str | None) -> None:
    """A stand-in `name` that prints output, or fails (exit 1) as sacct does when accounting is off."""
    script = bin_dir / name
    failing = "echo 'accounting storage is disabled' >&2\nexit 1\n"
    body = f"cat <<'OUT'\n{output}\nOUT\n" if output is not None else failing
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}/usr/bin:/bin")
    return d


def test_a_job_sacct_does_not_know_yet_is_taken_from_squeue(bin_dir):
    _command(bin_dir, "sacct", "101|RUNNING")
    _command(bin_dir, "squeue", "101|RUNNING\n102|PENDING\n999|RUNNING")
    assert slurm_job_states(["101", "102"]) == {"101": "RUNNING", "102": "PENDING"}


def test_sacct_wins_where_it_answers_and_other_users_jobs_are_left_out(bin_dir):
    _command(bin_dir, "sacct", "101|CANCELLED by 0\n102|PENDING")
    _command(bin_dir, "squeue", "101|RUNNING\n103|RUNNING")
    assert slurm_job_states(["101", "102"]) == {"101": "CANCELLED", "102": "PENDING"}


def test_array_items_from_either_command(bin_dir):
    _command(bin_dir, "sacct", "201_[0-2%2]|PENDING\n201_3|RUNNING\n201_3.batch|RUNNING")
    _command(bin_dir, "squeue", "202_[0,2]|PENDING")
    states = slurm_job_states(["201_1", "202_2"])
    assert states == {"201_0": "PENDING", "201_1": "PENDING", "201_2": "PENDING", "201_3": "RUNNING"} | {
        "202_0": "PENDING",
        "202_2": "PENDING",
    }


def test_an_array_task_sacct_has_not_reached_is_taken_from_squeue(bin_dir):
    """slurmdbd records an array's tasks as they start: sacct names task 0 (done) but not tasks 1 and 2 that
    squeue shows running and pending; without squeue they would look gone and a relaunch would submit them again."""
    _command(bin_dir, "sacct", "501_0|COMPLETED")
    _command(bin_dir, "squeue", "501_1|RUNNING\n501_[2]|PENDING\n501_0|RUNNING")
    states = slurm_job_states(["501_0", "501_1", "501_2"])
    assert states == {"501_0": "COMPLETED", "501_1": "RUNNING", "501_2": "PENDING"}  # sacct wins on 501_0
    _command(bin_dir, "squeue", "")  # the tasks really are gone: nothing is invented
    assert slurm_job_states(["501_0", "501_1"]) == {"501_0": "COMPLETED"}


def test_accounting_off_falls_back_to_squeue(bin_dir):
    _command(bin_dir, "sacct", None)
    _command(bin_dir, "squeue", "301|PENDING")
    assert slurm_job_states(["301", "302"]) == {"301": "PENDING"}


def test_no_answer_at_all_is_none_and_no_jobs_is_empty(bin_dir):
    _command(bin_dir, "sacct", None)
    _command(bin_dir, "squeue", None)
    assert slurm_job_states(["401"]) is None
    assert slurm_job_states([]) == {}


def test_expand_job_ids():
    assert _expand_job_ids("12") == ["12"]
    assert _expand_job_ids("12_3") == ["12_3"]
    assert _expand_job_ids("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
