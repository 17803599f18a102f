"""Benchmarks (`lakd bench ...`): measurements written as JSON, never part of the test suite."""

from __future__ import annotations

import os
import platform
import time


def machine_facts() -> dict:
    """What a result was measured on (bench/README.md: compare numbers only within one file), and when."""
    import torch

    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def publish(table, results: dict, out_json, console) -> dict:
    """Print a benchmark's table and write its results JSON atomically (when `out_json` is given)."""
    console.print(table)
    if out_json:
        from lakd.io import atomic_write_json

        atomic_write_json(out_json, results)
        console.print(f"written to {out_json}")
    return results
