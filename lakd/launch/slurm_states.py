"""What SLURM says about jobs: their states from sacct (squeue when accounting is off).

A job killed by the scheduler (time limit without requeue, out of memory, scancel) cannot write "failed"
itself, so `lakd status` and the launcher ask here before trusting a unit's own state.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

# SLURM states in which a job will not run again by itself
SLURM_FAILED = (
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "REVOKED",
)
SLURM_WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED", "CONFIGURING")
SLURM_RUNNING = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING")


def base_job_id(job_id: str) -> str:
    """'12_3' (an array item) -> '12' (its array job)."""
    return str(job_id).split("_", 1)[0]


def _expand_job_ids(field: str) -> list[str]:
    """'12', '12_3', '12_[0-2,5%2]' -> job ids as submitit names them ('12', '12_3', '12_0', ...)."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", field)
    if not m:
        return [field]
    base, index_ranges = m.group(1), m.group(2).split("%")[0]  # "0-2,5" of "0-2,5%2" (%2: at most 2 at once)
    out = []
    for part in index_ranges.split(","):
        lo, _, hi = part.partition("-")
        out.extend(f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def _parse_pairs(text: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        jid, state = line.split("|", 1)
        if "." in jid:  # job steps (12.batch)
            continue
        for j in _expand_job_ids(jid.strip()):
            states[j] = state.strip().split(" ")[0]  # "CANCELLED by 0" -> CANCELLED
    return states


def _run(cmd: list[str], timeout_s: float) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None


def slurm_job_states(job_ids: Iterable[str], timeout_s: float = 20) -> dict[str, str] | None:
    """{job id: SLURM state} from sacct, completed by squeue; None when neither answers.

    sacct learns of a job from slurmdbd a moment after sbatch returns, and of an array's tasks one by one as they
    start, so a job submitted just now, or an array task it has not reached, can be missing from its answer while
    squeue already shows it PENDING or RUNNING. Asking squeue for every job sacct does not name keeps such a job
    from looking gone (which would let a relaunch submit it twice); where both answer, sacct wins.
    """
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    bases = sorted({base_job_id(j) for j in ids})
    states: dict[str, str] = {}
    answered = False
    out = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(bases)], timeout_s)
    if out is not None:
        answered = True
        states = _parse_pairs(out)
    if any(not _named(j, states) for j in ids):
        out = _run(["squeue", "-h", "-o", "%i|%T"], timeout_s)
        if out is not None:
            answered = True
            for j, state in _parse_pairs(out).items():
                if base_job_id(j) in bases and j not in states:
                    states[j] = state
    return states if answered or states else None


def _named(job_id: str, states: dict[str, str]) -> bool:
    """Whether an answer names this job: itself, or for a whole array (its base id) any of its tasks."""
    return job_id in states or ("_" not in job_id and any(base_job_id(k) == job_id for k in states))
