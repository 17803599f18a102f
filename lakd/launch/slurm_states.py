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


def slurm_job_states(job_ids: Iterable[str], timeout_s: float = 20) -> dict[str, str] | None:
    """{job id: SLURM state} from sacct (squeue when accounting is off); None when neither answers."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    bases = sorted({base_job_id(j) for j in ids})
    if shutil.which("sacct"):
        try:
            out = subprocess.run(
                ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(bases)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=True,
            ).stdout
            states = _parse_pairs(out)
            if states:
                return states
        except (subprocess.SubprocessError, OSError):
            pass
    if shutil.which("squeue"):
        try:
            out = subprocess.run(
                ["squeue", "-h", "-o", "%i|%T"], capture_output=True, text=True, timeout=timeout_s, check=True
            ).stdout
            states = _parse_pairs(out)
            return {j: states[j] for j in ids if j in states} | {b: states[b] for b in bases if b in states}
        except (subprocess.SubprocessError, OSError):
            pass
    return None
