#!/usr/bin/env python
"""`python tune/search.py ...` is `lakd tune ...` (same options; see `lakd tune --help` and docs/tuning.md).

python tune/search.py --config tiny                                         # local Ray, default space
python tune/search.py --config my.yaml --space tune/space.yaml --num-samples 32 --gpus-per-trial 0.5
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lakd

if __name__ == "__main__":
    import typer

    from lakd.tune.cli import tune_cmd

    typer.run(tune_cmd)
