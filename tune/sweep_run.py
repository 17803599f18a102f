#!/usr/bin/env python
"""The program of tune/sweep.yaml: `wandb agent` runs `/usr/bin/env python tune/sweep_run.py --config=... --k=v ...`
(see lakd.tune.sweep and docs/tuning.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lakd

if __name__ == "__main__":
    from lakd.tune.sweep import run_agent_trial

    print(f"student checkpoint: {run_agent_trial(sys.argv[1:])}")
